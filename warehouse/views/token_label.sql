-- token_label(text): a token's text made visible for axis labels and tooltips: a space shows as '·',
-- a newline as '↵', a tab as '⇥', the empty string as '∅'. Still plain text: pages escape it.
CREATE OR REPLACE MACRO token_label(t) AS
    CASE WHEN t IS NULL OR t = '' THEN '∅'
         ELSE replace(replace(replace(replace(t, chr(13), '␍'), chr(10), '↵'), chr(9), '⇥'), ' ', '·') END;

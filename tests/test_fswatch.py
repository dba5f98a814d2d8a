"""tests/fswatch.py, the event-driven wait of the kill-mid-write tests: it wakes on a file renamed into place
in a folder created after the watch began (hive partitions appear on the fly), and times out when nothing lands."""

import os
import threading
import time

from tests.fswatch import Watch


def test_wakes_on_a_rename_into_a_new_nested_folder_and_times_out_otherwise(tmp_path):
    with Watch(tmp_path / "data") as watch:
        assert watch.wait(0.05) == []
        (tmp_path / "data" / "token_stats" / "task=trec").mkdir(parents=True)
        landed = watch.wait(5)
        assert tmp_path / "data" / "token_stats" in landed
        while watch.wait(0.05):  # the nested folder's own event, if it came separately
            pass

        def write():
            tmp = tmp_path / "data" / "token_stats" / "task=trec" / ".tmp-x"
            tmp.write_bytes(b"x")
            os.replace(tmp, tmp.with_name("s1.parquet"))

        t0 = time.monotonic()
        threading.Timer(0.2, write).start()
        seen = []
        while not any(p.name == "s1.parquet" for p in seen) and time.monotonic() - t0 < 5:
            seen += watch.wait(5)
        assert any(p == tmp_path / "data" / "token_stats" / "task=trec" / "s1.parquet" for p in seen), seen
        assert time.monotonic() - t0 < 4, "woken by the write, not by the 5 s timeout"

"""Parameter shapes shared by the flows (what `prefect deployment run -p` hands them)."""

from __future__ import annotations


def as_list(value: list | str | None) -> list | None:
    """A JSON list, or a comma-separated string (`-p tasks=qasper,trec`). None stays None ("unset": every
    task); "" gives [], which the consumers refuse as an empty task name (it never means every task). It
    does not raise itself: flow run names are built with it before the flow can report an error."""
    if value is None or isinstance(value, list):
        return value
    return [v.strip() for v in value.split(",") if v.strip()]


def transient(err: BaseException | None) -> bool:
    """Can a second attempt succeed? Only for I/O (a flaky disk, an object store or hub hiccup: OSError, which
    covers timeouts and connection errors) and memory that other work may free. Everything else (a bad model or
    parameter, an unsupported architecture, a shape error in the model) fails the same way every time."""
    import torch

    from warehouse.remote import StoreError  # a missing bucket, refused credentials, a damaged file: every time

    if isinstance(err, StoreError):
        return False
    return isinstance(err, OSError | MemoryError | torch.cuda.OutOfMemoryError)


def retryable(task, task_run, state) -> bool:
    """Prefect `retry_condition_fn` of the model loads and per-sample tasks: retry only a transient error."""
    try:
        err = state.result(raise_on_failure=False)
    except Exception as exc:  # the result could not be read back: treat it as what it raised
        err = exc
    if not isinstance(err, BaseException):
        err = getattr(state, "data", None)
    return transient(err) if isinstance(err, BaseException) else True


def check_before_work(
    output: str | None, model: str | None, device: str, dtype: str | None = None, run_name: str | None = None
) -> None:
    """What a flow checks before it loads a model or reads data: an unwritable `output` used to fail after
    the model load and the prefills, a bad device or model only after retries, a `run_name` that cannot name
    a folder at the first write. `model` None: not known yet."""
    from extract import model as models
    from extract.run import check_run_name
    from warehouse import config, remote

    check_run_name(run_name)

    data_root, _ = config.locations(output)
    if not remote.is_url(data_root):
        config.writable_dir(data_root, "output")
    if model is None:
        models.check_device(models.pick_device(device))
    else:
        models.check(model, device, dtype)

"""gdlab.integrations: the only code that relies on a library's internals. Each test fails with a message that
says what an upgrade removed and which module to revisit."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from gdlab.integrations import tensorboard as tb_integration
from gdlab.integrations.torch_module import FastPlainAttributes


def test_tensorboard_still_checksums_records_through_the_function_gdlab_replaces():
    from tensorboard.summary.writer import record_writer

    assert hasattr(record_writer, "masked_crc32c"), (
        "tensorboard.summary.writer.record_writer.masked_crc32c is gone: gdlab.integrations.tensorboard "
        "can no longer speed up event files (TensorBoard still works, slower); revisit that module"
    )
    assert tb_integration.use_fast_checksums(), (
        "google-crc32c (a gdlab dependency) has no C implementation here"
    )
    assert record_writer.masked_crc32c is tb_integration.fast_masked_crc32c


def test_fast_checksums_are_tensorboards_own():
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    for size in (0, 1, 7, 8, 40, 300, 4096):
        data = os.urandom(size)
        assert tb_integration.fast_masked_crc32c(data) == masked_crc32c(data), size


@pytest.mark.parametrize("missing", ["google_crc32c", "its C implementation"])
def test_without_the_fast_checksum_tensorboard_keeps_its_own(monkeypatch, missing):
    import sys
    import types

    from tensorboard.summary.writer import record_writer

    own = record_writer.masked_crc32c
    if missing == "google_crc32c":
        monkeypatch.setitem(sys.modules, "google_crc32c", None)  # `import google_crc32c` raises ImportError
    else:
        monkeypatch.setitem(sys.modules, "google_crc32c", types.SimpleNamespace(implementation="python"))
    monkeypatch.setattr(record_writer, "masked_crc32c", own)  # restored after the test either way
    assert tb_integration.use_fast_checksums() is False
    assert record_writer.masked_crc32c is own


def test_event_files_written_with_fast_checksums_read_back_with_tensorboards_checks(tmp_path):
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New
    from torch.utils.tensorboard import SummaryWriter

    tb_integration.use_fast_checksums()
    writer = SummaryWriter(str(tmp_path))
    for step in range(20):
        writer.add_scalar("x", step * 0.5, step)
    writer.close()
    (path,) = tmp_path.glob("events.out.tfevents.*")
    reader = PyRecordReader_New(str(path))  # verifies both checksums of every record
    records = 0
    while True:
        try:
            reader.GetNext()
        except Exception as end:  # OutOfRangeError at the end; DataLossError on a bad checksum
            assert type(end).__name__ == "OutOfRangeError", end
            break
        records += 1
    assert records == 21 == len(list(RawEventFileLoader(str(path)).Load()))  # the file-version record + 20


def test_torch_keeps_the_registries_the_fast_attribute_path_reads():
    module = nn.Linear(2, 2)
    for registry in ("_parameters", "_buffers", "_modules"):
        assert isinstance(module.__dict__.get(registry), dict), (
            f"torch.nn.Module no longer keeps {registry} in its __dict__: gdlab.integrations.torch_module's "
            "fast path no longer applies (every attribute takes torch's own path); revisit that module"
        )


class _Fast(FastPlainAttributes):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 2)
        self.register_buffer("stat", torch.zeros(1))


class _Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 2)
        self.register_buffer("stat", torch.zeros(1))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("hook_name", "training_step"),  # a plain attribute
        ("count", 3),
        ("layer", None),  # a registered submodule set to None stays registered, as None
        ("stat", None),  # a registered buffer likewise
        ("layer", nn.ReLU()),  # a module replaces a module
        ("weight2", nn.Parameter(torch.ones(1))),  # a parameter is registered
    ],
)
def test_fast_plain_attributes_end_as_torchs_own(name, value):
    fast, plain = _Fast(), _Plain()
    setattr(fast, name, value)
    setattr(plain, name, value)
    for registry in ("_parameters", "_buffers", "_modules"):
        assert fast.__dict__[registry].keys() == plain.__dict__[registry].keys(), registry
    assert (name in fast.__dict__) == (name in plain.__dict__)
    assert getattr(fast, name) is getattr(plain, name) or getattr(fast, name) == getattr(plain, name)

"""TensorBoard's event-file checksum, computed in C instead of pure Python.

Every record TensorBoard's event writer (the one torch's ``SummaryWriter`` and Lightning's
``TensorBoardLogger`` use) appends carries a masked CRC32C of its bytes. Without TensorFlow installed
it computes them in pure Python (``tensorboard.compat.tensorflow_stub``), about 1,800 instructions per
byte: measured with callgrind, 45% of the cost of one scalar written through ``logger.log_metrics``,
and ~0.5 M of the ~4.4 M instructions of a small training step in gdlab's default config. There is no
public switch for it. :func:`use_fast_checksums` replaces that one function of
``tensorboard.summary.writer.record_writer`` with google-crc32c's C implementation: the same bytes,
far fewer instructions. When either piece is missing nothing is replaced and TensorBoard works as it
always does; ``tests/test_integrations.py`` says which piece is gone.
"""

from __future__ import annotations

from tensorboard.summary.writer import record_writer

_MASK = 0xFFFFFFFF


def fast_masked_crc32c(data: bytes) -> int:
    """TensorBoard's masked CRC32C (``tensorflow_stub.pywrap_tensorflow.masked_crc32c``) via google-crc32c."""
    import google_crc32c

    x = google_crc32c.value(bytes(data))
    return ((((x >> 15) | (x << 17)) & _MASK) + 0xA282EAD8) & _MASK


def use_fast_checksums() -> bool:
    """Swap in :func:`fast_masked_crc32c` (once per process); False when it cannot be done."""
    try:
        import google_crc32c
    except ImportError:
        return False
    if getattr(google_crc32c, "implementation", None) != "c" or not hasattr(record_writer, "masked_crc32c"):
        return False
    record_writer.masked_crc32c = fast_masked_crc32c
    return True

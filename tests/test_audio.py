import numpy as np
import pytest
import soundfile
from conftest import tone, write_wav
from scipy.signal import resample_poly

from msir_keras.audio import AudioError, read_audio


def test_reads_emodb_as_float_in_unit_range(sample_wav):
    signal = read_audio(sample_wav)
    raw, rate = soundfile.read(sample_wav, dtype="int16")
    assert rate == 16000 and signal.dtype == np.float32
    np.testing.assert_allclose(signal, raw / 32768.0, atol=1e-7)
    assert np.abs(signal).max() <= 1.0


def test_stereo_is_downmixed_by_averaging(tmp_path):
    left, right = tone(0.3, frequency=200), tone(0.3, frequency=330, seed=1)
    path = write_wav(str(tmp_path / "stereo.wav"), np.stack([left, right], axis=1), subtype="FLOAT")
    np.testing.assert_allclose(read_audio(path), (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_other_rates_are_resampled_to_16k(tmp_path, rate):
    seconds = 0.5
    signal = tone(seconds, rate=rate, frequency=300)
    path = write_wav(str(tmp_path / f"x{rate}.flac"), signal, rate=rate)
    out = read_audio(path)
    assert abs(len(out) - seconds * 16000) <= 1
    reference = resample_poly(soundfile.read(path, dtype="float32")[0], 16000, rate)
    n = min(len(out), len(reference))
    # Different resamplers: compare away from the edges, by correlation.
    assert np.corrcoef(out[200 : n - 200], reference[200 : n - 200])[0, 1] > 0.99


def test_bad_files_name_the_file_and_the_reason(tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF0000WAVEnot really audio")
    empty = write_wav(str(tmp_path / "empty.wav"), np.zeros(0, np.float32))
    short = write_wav(str(tmp_path / "short.wav"), np.zeros(100, np.float32))
    cases = {
        str(broken): "unreadable",
        empty: "no samples",
        short: "too short",
        str(tmp_path / "missing.wav"): "no such file",
    }
    for path, reason in cases.items():
        with pytest.raises(AudioError) as caught:
            read_audio(path)
        assert path in str(caught.value) and reason in str(caught.value)


def test_extractors_refuse_integer_and_int16_scale_samples(sample_wav):
    from msir_keras.features import LLD, LogMel

    signal = read_audio(sample_wav)
    for extractor in (LogMel(), LLD()):
        with pytest.raises(ValueError, match="int16 samples: the extractors take floats.*read_audio"):
            extractor((signal * 32767).astype(np.int16))
        with pytest.raises(ValueError, match="far outside \\[-1, 1\\].*divide by 32768"):
            extractor(signal * 32768.0)
    assert LogMel()(signal).shape[0] > 0  # read_audio's floats pass


def test_a_header_without_its_data_size_is_read_as_its_format_says(tmp_path):
    import struct
    import warnings

    path = write_wav(str(tmp_path / "whole.wav"), tone(0.5))
    data = bytearray(open(path, "rb").read())
    at = data.find(b"data")
    data[at + 4: at + 8] = struct.pack("<I", 0)
    (tmp_path / "unsized.wav").write_bytes(bytes(data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        signal = read_audio(str(tmp_path / "unsized.wav"))
    np.testing.assert_array_equal(signal, read_audio(path))
    assert "data size is 0" in str(caught[0].message)


def test_a_file_in_memory_reads_and_warns_as_the_file_does(tmp_path, sample_wav):
    """`msir serve` decodes uploads from memory through the same reader: the same samples, reasons, warnings."""
    import io

    data = open(sample_wav, "rb").read()
    np.testing.assert_array_equal(read_audio(io.BytesIO(data), name="up.wav"), read_audio(sample_wav))
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(data[:-1000])
    with pytest.warns(UserWarning) as from_file:
        read_audio(str(truncated))
    told = []
    read_audio(io.BytesIO(truncated.read_bytes()), name="up.wav", warn=told.append)
    assert [w.reason for w in told] == [w.message.reason for w in from_file] and told[0].path == "up.wav"
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF0000WAVEnot really audio")
    with pytest.raises(AudioError) as on_disk:
        read_audio(str(broken))
    with pytest.raises(AudioError) as in_memory:
        read_audio(io.BytesIO(broken.read_bytes()), name="broken.wav")
    assert in_memory.value.reason == on_disk.value.reason.replace(str(broken), "broken.wav")
    assert in_memory.value.path == "broken.wav"

import os

import numpy as np
import pytest
from conftest import tone, write_wav

from msir_keras.audio import read_audio
from msir_keras.cli import main
from msir_keras.features import LLD, FeatureStore, LogMel, MissingFeaturesError, Wav2Vec2, parse_shard


@pytest.fixture
def paths(emodb):
    return emodb.utterances["path"][:6].tolist()


def _entries(root):
    return sorted(
        os.path.join(folder, name)
        for folder, _, names in os.walk(root)
        for name in names
        if name.endswith(".npy")
    )


def test_second_run_computes_nothing_and_reads_the_same_arrays(tmp_path, paths, tiny_wav2vec2):
    store = FeatureStore(str(tmp_path))
    extractors = [LogMel(), LLD(), Wav2Vec2(source=tiny_wav2vec2)]
    first = store.extract(paths, extractors)
    assert (first.computed, first.cached, first.failed) == (6, 0, [])
    stamps = {p: os.stat(p).st_mtime_ns for p in _entries(tmp_path)}
    assert len(stamps) == 18
    second = FeatureStore(str(tmp_path)).extract(paths, extractors)
    assert (second.computed, second.cached) == (0, 6)
    assert stamps == {p: os.stat(p).st_mtime_ns for p in _entries(tmp_path)}
    loaded = store.load_many(paths[:1], extractors[0])[0]
    np.testing.assert_array_equal(loaded, LogMel()(read_audio(paths[0])))
    # Entries are plain .npy arrays: they load with pickling refused.
    assert all(np.load(p, allow_pickle=False).dtype == np.float32 for p in stamps)


def test_a_changed_setting_is_a_new_entry_never_a_stale_one(tmp_path, paths):
    store = FeatureStore(str(tmp_path))
    store.extract(paths[:2], [LogMel()])
    summary = store.extract(paths[:2], [LogMel(deltas=2)])
    assert summary.computed == 2
    assert store.load_many(paths[:1], LogMel(deltas=2))[0].shape[-1] == 3
    assert store.load_many(paths[:1], LogMel())[0].shape[-1] == 2


class _Interrupting(LogMel):
    """A log-Mel extractor killed (KeyboardInterrupt) after `limit` files."""

    def __init__(self, limit):
        super().__init__()
        self.limit, self.calls = limit, 0

    def extract_many(self, signals):
        out = []
        for signal in signals:
            if self.calls == self.limit:
                raise KeyboardInterrupt
            self.calls += 1
            out.append(self(signal))
        return out


def test_killed_halfway_the_next_run_resumes(tmp_path, paths):
    store = FeatureStore(str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        store.extract(paths, [_Interrupting(limit=4)], chunk_size=2)
    assert len(_entries(tmp_path)) == 4
    assert not [n for _, _, names in os.walk(tmp_path) for n in names if n.startswith(".tmp")]
    summary = store.extract(paths, [LogMel()], chunk_size=2)
    assert (summary.computed, summary.cached) == (2, 4)


def test_failing_files_are_reported_and_the_others_extracted(tmp_path, paths):
    broken = tmp_path / "audio" / "broken.wav"
    broken.parent.mkdir()
    broken.write_bytes(b"RIFF....WAVEfmt garbage")
    empty = write_wav(str(tmp_path / "audio" / "empty.wav"), np.zeros(0, np.float32))
    good = write_wav(str(tmp_path / "audio" / "good.wav"), tone(0.4))
    store = FeatureStore(str(tmp_path / "store"))
    summary = store.extract([str(broken), empty, good] + paths[:2], [LogMel(), LLD()])
    assert summary.computed == 3
    reasons = dict(summary.failed)
    assert set(reasons) == {str(broken), empty}
    assert "unreadable" in reasons[str(broken)] and "no samples" in reasons[empty]
    assert str(broken) in str(summary)
    with pytest.raises(MissingFeaturesError, match="msir extract"):
        store.load_many([empty], LogMel())


def test_shards_split_the_work_without_overlap(tmp_path, paths):
    assert parse_shard("2/3") == (2, 3)
    for bad in ("0/3", "4/3", "x"):
        with pytest.raises(ValueError):
            parse_shard(bad)
    store = FeatureStore(str(tmp_path))
    done = [store.extract(paths, [LogMel()], shard=(i, 3)).computed for i in (1, 2, 3)]
    assert done == [2, 2, 2]
    assert store.extract(paths, [LogMel()]).cached == 6


def test_cli_extract_on_emodb_then_a_second_run_is_a_no_op(tmp_path, emodb_root, tiny_wav2vec2, capsys):
    manifest = tmp_path / "few.csv"
    import pandas as pd

    from msir_keras.corpora import load_emodb

    table = load_emodb(emodb_root).utterances.iloc[::60]
    table[["path", "label", "speaker"]].to_csv(manifest, index=False)
    args = ["extract", "--corpus", "manifest", "--root", str(manifest), "--store", str(tmp_path / "s"),
            "--wav2vec2", tiny_wav2vec2]
    assert main(args) == 0
    assert f"{len(table)} files extracted, 0 already in the store, 0 failed" in capsys.readouterr().out
    assert main(args) == 0
    assert f"0 files extracted, {len(table)} already in the store" in capsys.readouterr().out
    assert len(pd.Series(_entries(tmp_path / "s"))) == 3 * len(table)
    assert main(args[:-1] + ["no-such-org/no-such-model"]) == 2
    assert "--wav2vec2" in capsys.readouterr().err


def test_worker_processes_give_the_same_entries(tmp_path, paths, tiny_wav2vec2):
    # openSMILE and log-Mels in a worker process beside the encoder: the same arrays as in-process.
    extractors = [LogMel(), LLD(), Wav2Vec2(source=tiny_wav2vec2)]
    here = FeatureStore(str(tmp_path / "here")).extract(paths[:3], extractors)
    there_store = FeatureStore(str(tmp_path / "there"))
    there = there_store.extract(paths[:3], extractors, workers=1)
    assert (here.computed, there.computed, there.failed) == (3, 3, [])
    for extractor in extractors:
        np.testing.assert_array_equal(
            np.concatenate(FeatureStore(str(tmp_path / "here")).load_many(paths[:3], extractor)),
            np.concatenate(there_store.load_many(paths[:3], extractor)),
        )


def test_nonfinite_features_fail_the_file_and_changed_bytes_are_caught_on_loading(tmp_path, paths):
    from msir_keras.features import DamagedEntryError
    from msir_keras.features.store import checksum

    short = write_wav(str(tmp_path / "short.wav"), tone(0.035))  # openSMILE: one frame of NaN
    store = FeatureStore(str(tmp_path / "s"))
    summary = store.extract([short, paths[0]], [LLD()])
    assert summary.computed == 1 and [p for p, _ in summary.failed] == [short]
    assert "features hold NaN or infinity" in dict(summary.failed)[short] and "35 ms" in str(summary)
    entry = _entries(tmp_path / "s")[0]
    array = np.load(entry)
    assert open(entry[:-4] + ".b2").read() == checksum(array)
    # The data changed after the write, header and size intact: the checksum catches it on loading.
    changed = array.copy()
    changed[0, 0] += 1.0
    np.save(entry, changed)
    with pytest.raises(DamagedEntryError, match="does not match the checksum"):
        FeatureStore(str(tmp_path / "s")).load_many([paths[0]], LLD())
    assert not os.path.exists(entry)  # set aside; the next extraction computes it again
    assert FeatureStore(str(tmp_path / "s")).extract([paths[0]], [LLD()]).computed == 1

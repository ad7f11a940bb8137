from __future__ import annotations

import numpy as np

from deepfeat.features.journal import Record, append_record, ranges, read_journal, status_of


def test_ranges():
    assert ranges([5, 0, 1, 2, 7, 6]) == [[0, 3], [5, 8]]
    assert ranges([]) == []


def test_read_journal_separates_torn_tail_from_damage(tmp_path):
    path = tmp_path / "journal.jsonl"
    append_record(path, Record(0, [[0, 2]], {}, crc=7, shape=(3,)))
    with open(path, "a") as fh:
        fh.write("garbage\n")
        fh.write('{"rows": [[0, 99]], "failed": {}}\n')
    append_record(path, Record(0, [], {2: "empty file"}))
    with open(path, "a") as fh:
        fh.write('{"rows": [[3')
    journal = read_journal(path, 4)
    assert journal.torn and journal.intact_bytes == len(path.read_bytes()) - len('{"rows": [[3')
    assert journal.problems == ["journal line 2: unreadable", "journal line 3: names rows outside 0..3"]
    assert [r.line for r in journal.records] == [1, 4] and journal.records[0].shape == (3,)
    status = status_of(journal.records, 4)
    assert status.done.tolist() == [True, True, True, False]
    assert status.failed == {2: "empty file"} and status.valid.tolist() == [True, True, False, False]


def test_missing_journal_is_empty(tmp_path):
    journal = read_journal(tmp_path / "none.jsonl", 3)
    assert journal.records == [] and not journal.problems
    assert not status_of([], 3).done.any()
    assert np.array_equal(status_of([], 3).valid, np.zeros(3, bool))

from conftest import TINY, read_metrics, train_in_process


def test_tiny_run_trains_and_records(tmp_path):
    summary = train_in_process(tmp_path, TINY)
    assert summary["status"] == "completed"
    rows = read_metrics(tmp_path)
    assert len(rows) == 1 and rows[0]["nfe/forward"] > 0

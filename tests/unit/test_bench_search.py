"""`shazzam bench search` on tiny sizes: every method runs and the report holds its figures."""

from __future__ import annotations

from shazzam import bench_search


def test_bench_reports_every_method_on_a_small_shard():
    report = bench_search.run([3000], queries=6, dim=64, log=lambda message: None)
    (size,) = report["sizes"]
    methods = size["methods"]
    assert methods["original"]["recall_at_10"] == 1.0  # the original is the exact float32 L1
    assert methods["ours"]["recall_at_10"] >= 0.8
    assert methods["ours"]["split_4_parts_same_answer"] is True
    assert methods["ours-numpy"]["same_answer_as_kernel"] is True
    assert size["cold_load"]["seconds"] > 0 and size["cold_load"]["bytes_per_item"] > 64
    assert report["memory_copy_gb_per_s"] > 0
    assert "faiss" in methods  # measured, or skipped with the reason
    text = bench_search.format_report(report)
    assert "3,000 items x 64 dims" in text and "speedup vs original" in text

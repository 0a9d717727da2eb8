"""The benchmark script runs and writes the numbers it promises (no timing assertions)."""
import json

from anysat_lite.cli import main


def test_bench_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--sizes", "nano", "--no-sweeps", "--repeats", "1", "--rounds", "2", "--batch", "1",
                 "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["machine"]["torch"] and data["machine"]["matmul_peak_flops"] > 0
    res = data["results"][0]["result"]
    for key in ("forward_ms", "forward_backward_ms", "patch_tokens_per_s", "subpatch_tokens_per_s", "peak_memory_mb",
                "forward_flops", "achieved_flops_forward_backward"):
        assert res[key] > 0, key
    # two processes, one timed repetition each: the reported median is taken over both
    assert res["processes"] == 2 and len(res["forward_backward_times_ms"]) == 2
    assert min(res["forward_backward_times_ms"]) <= res["forward_backward_ms"] <= max(res["forward_backward_times_ms"])
    assert "matmul peak" in capsys.readouterr().out


def test_bench_pretraining_mode(tmp_path, capsys):
    out = tmp_path / "pre.json"
    assert main(["bench", "--pretrain", "cpu-demo", "--steps", "2", "--json", str(out)]) == 0
    res = json.loads(out.read_text())["pretraining"][0]["result"]
    assert res["steps_per_s"] > 0 and res["peak_memory_mb"] > 0 and res["model"] == "D64/depth2/heads4"
    assert "steps/s" in capsys.readouterr().out

import json

from fcn8s.cli import main


def test_bench_measures_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "--what", "train,infer", "--batch", "1", "--size", "32", "--width", "0.0625",
                 "--repeat", "1", "--warmup", "1", "--mode", "pynative", "--compare", "onnxruntime,ms-kernels", "-o", str(out)])
    assert code == 0
    table = capsys.readouterr().out
    assert "train fcn8s" in table and "infer fcn8s" in table
    report = json.loads(out.read_text())
    assert report["machine"]["matmul_peak_gflops"]["mindspore"] > 0
    rows = {r["what"]: r for r in report["models"] if r["impl"] == "fcn8s"}
    for what in ("train", "infer"):
        assert "error" not in rows[what], rows[what]
        assert rows[what]["median_s"] > 0 and rows[what]["peak_rss_mib"] > 100
        assert rows[what]["onednn_isa"] == "AVX2"
        assert rows[what]["backbone_impl"] == "onednn"
    assert {r["backbone_impl"] for r in report["models"] if r["impl"] == "ms-kernels"} == {"fast"}
    assert rows["train"]["gflop"] == 3 * rows["infer"]["gflop"]
    onnx_rows = {r["what"]: r for r in report["models"] if r["impl"] == "onnxruntime"}
    assert "inference only" in onnx_rows["train"]["error"]
    assert onnx_rows["infer"]["median_s"] > 0 and onnx_rows["infer"]["framework"] == "onnxruntime"
    assert "infer onnxruntime" in table


def test_bench_rejects_bad_requests(capsys):
    assert main(["bench", "--what", "speed"]) == 2
    assert main(["bench", "--compare", "seed", "--width", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "--what speed: choose from train, infer, data" in err and "use --width 1" in err

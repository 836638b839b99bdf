"""The oneDNN kernel library: its build, its cache, and what happens when it cannot be used.

Its numerics (forward and both gradients, per layer and for the whole network) are tested against
nn.Conv2d in test_models.py.
"""
import shutil

import pytest

from fcn8s.errors import FCNError
from fcn8s.models import fcn, onednn

needs_compiler = pytest.mark.skipif(shutil.which("g++") is None, reason="no g++ to build the kernels")


@needs_compiler
def test_build_compiles_once_into_the_cache(tmp_path):
    library, private_dnnl = onednn.build(tmp_path, "g++")
    assert library.is_file() and private_dnnl.is_file()
    assert private_dnnl.stat().st_size == onednn._mindspore_dnnl()[0].stat().st_size
    stamps = library.stat().st_mtime_ns, private_dnnl.stat().st_mtime_ns
    assert onednn.build(tmp_path, "g++") == (library, private_dnnl)
    assert (library.stat().st_mtime_ns, private_dnnl.stat().st_mtime_ns) == stamps
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([library.name, private_dnnl.name])


def test_a_missing_compiler_is_named(tmp_path):
    with pytest.raises(onednn.OneDNNUnavailable, match=r"no C\+\+ compiler 'no-such-c\+\+' on PATH"):
        onednn.build(tmp_path, "no-such-c++")


def test_a_failed_compile_leaves_nothing_in_the_cache(tmp_path):
    with pytest.raises(onednn.OneDNNUnavailable, match="compiling .*onednn_conv.cc failed"):
        onednn.build(tmp_path, "false")
    assert list(tmp_path.iterdir()) == []


@needs_compiler
def test_an_unwritable_cache_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(onednn.OneDNNUnavailable, match=f"cannot write the kernel cache {blocker}.*FCN8S_CACHE"):
        onednn.build(blocker, "g++")


@needs_compiler
def test_kernels_are_the_channels_last_ones():
    names = [onednn.kernel_name(op, 2, 64, 64, 32, 32, 3) for op in onednn.OPS]
    assert names[0].startswith("brg_conv_fwd:") and names[1].startswith("brg_conv_bwd:"), names
    assert "ref" not in " ".join(names) and "gemm" not in " ".join(names), names


@needs_compiler
def test_a_shape_oneDNN_refuses_is_named():
    with pytest.raises(onednn.OneDNNUnavailable, match="memory_desc_create_with_tag"):
        onednn.kernel_name("forward", 1, -1, 8, 8, 8, 3)


def test_auto_falls_back_to_mindspore_kernels_and_says_why(monkeypatch):
    monkeypatch.setattr(onednn, "available", lambda: (False, "no C++ compiler 'g++' on PATH"))
    impl, note = fcn.resolve_backbone_impl("auto")
    assert impl == "fast" and "no C++ compiler 'g++' on PATH" in note
    with pytest.raises(FCNError, match="model.backbone_impl onednn: no C\\+\\+ compiler"):
        fcn.resolve_backbone_impl("onednn")
    assert fcn.resolve_backbone_impl("native") == ("native", "convolutions: MindSpore's (native)")


@needs_compiler
def test_auto_picks_onednn_on_cpu():
    impl, note = fcn.resolve_backbone_impl("auto")
    assert impl == "onednn" and "brg_conv_fwd" in note

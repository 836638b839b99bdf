"""The download catalogue fcn8s/data/resources.py: groups, names, the published sizes and checksums."""
import pytest

from fcn8s.data.resources import RESOURCES, Resource, catalogue_lines, select_resources
from fcn8s.errors import FCNError


def test_groups_select_the_published_resources():
    def files(*names):
        return [r.file for r in select_resources(names)]
    assert files("tutorial") == ["dataset_fcn8s.tar", "fcn8s_vgg16_pretrain.ckpt", "FCN8s.ckpt"]
    assert files("checkpoints") == ["fcn8s_vgg16_pretrain.ckpt", "FCN8s.ckpt"]
    assert files("voc2012", "sbd") == ["VOCtrainval_11-May-2012.tar", "benchmark.tgz"]
    assert files("imagenet") == ["vgg16_bn-6c64b313.pth"]
    assert files("all") == [r.file for r in RESOURCES] and len(files("all")) == 6
    assert files("FCN8s.ckpt", "checkpoints") == ["fcn8s_vgg16_pretrain.ckpt", "FCN8s.ckpt"]
    voc = select_resources(["voc2012"])[0]
    assert (voc.size, voc.checksum) == (1999639040, "md5:6cd6e144f989b92b3379bac3b3de84fd")


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(FCNError) as err:
        select_resources(["voc2013"])
    message = str(err.value)
    assert "'voc2013'" in message
    for name in ("tutorial", "checkpoints", "voc2012", "sbd", "all", "FCN8s"):
        assert name in message


def test_a_published_checksum_prefix_matches_the_whole_digest():
    """torchvision publishes only the first 8 hex digits of a file's sha256 (in its name)."""
    resource = Resource("w", "https://example.invalid/w", "w.pth", "g", checksum="sha256:6c64b313")
    assert (resource.checksum_algorithm, resource.checksum_digest) == ("sha256", "6c64b313")
    assert resource.digest_matches("6c64b313" + "0" * 56) and not resource.digest_matches("6c64b312" + "0" * 56)


def test_catalogue_lists_every_resource_and_group():
    text = "\n".join(catalogue_lines())
    for resource in RESOURCES:
        assert resource.name in text and resource.url in text
    assert text.endswith("groups: checkpoints, imagenet, sbd, tutorial (+checkpoints), voc2012, all")

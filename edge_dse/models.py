"""The one owner of "the model": its card, its onnxruntime session, its batches, its role.

Every model edge_dse runs is an asset folder: `model.onnx`, `tokenizer.json` and `card.json`.
This module is the only one that opens a card (`read_card`, `ModelCard.load`), writes one
(`write_card`), makes an onnxruntime session (`make_session`) or turns texts into padded
batches (`tokenize`). The run-time `Encoder` (encoder.py) and `CrossEncoder` (rerank.py) are
built from these parts, and so is the export's measurement (distill/measure.py), so that what an
export measures is what the program runs.

Roles: a shipped model is the default encoder (what a new library embeds with), an opt-in
encoder (used when `--model` names it) or the teacher (it re-scores an encoder's top hits).
Which one is decided here (`role_of`), and every label the CLI, the UI and the cards give a
model comes from `label` and `role_text`, never from text written elsewhere.

Like the encoder: tokenizers, onnxruntime and numpy are imported lazily, so `import edge_dse`
stays fast.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from . import config
from .errors import EdgeDSEError
from .modes import MODES

if TYPE_CHECKING:
    import numpy as np

CARD_FILE = "card.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
FILES = (MODEL_FILE, TOKENIZER_FILE, CARD_FILE)

KINDS = ("cross-encoder", "bi-encoder")
POOLINGS = ("mean", "cls", "none")
DEFAULT_MAX_LENGTH = 256  # what a card without "max_length" gets (every exported card has one)
# The encoder hits the teacher re-scores when its card records no measured depth ("rerank":
# {"default_depth": N}): a fallback, not a measurement. 20 is what the UI re-scored at its default
# k of 10 before cards recorded a depth.
DEFAULT_DEPTH = 20

# Padded tokens per batch. Attention holds batch x heads x length^2 floats per layer, so 32
# passages of 256 tokens peak at ~760 MB RSS in onnxruntime; 8 x 256 peaks at ~280 MB at the
# same speed (measured on the baseline, 512 Python docs passages, 2 threads).
MAX_BATCH_TOKENS = 2048
TOKENIZE_WINDOW = 1024  # texts tokenised per encode_batch call (bounds the Encoding objects alive)

# -- roles ---------------------------------------------------------------------------------------
DEFAULT, OPT_IN, TEACHER = "default", "opt-in", "teacher"
ROLES = (DEFAULT, OPT_IN, TEACHER)
# What a role is called in a label: "baseline (default encoder)".
ROLE_TITLES = {DEFAULT: "default encoder", OPT_IN: "opt-in encoder", TEACHER: "reranker"}
# What a model in that role does, in one line (the Model tab, a teacher's card).
ROLE_DUTIES = {
    DEFAULT: "embeds every new library (an existing library keeps the model that built it)",
    OPT_IN: "embeds a library only when `--model` names it",
    TEACHER: "re-scores the search encoder's top hits (`--rerank`)",
}


# -- the card ------------------------------------------------------------------------------------
def has_card(folder: str | os.PathLike) -> bool:
    """Whether a folder holds a model card (it may still lack its other files)."""
    return (Path(folder) / CARD_FILE).is_file()


def read_card(folder: str | os.PathLike) -> dict:
    """A folder's card.json as written, unchecked but parsed; a one-line error when unreadable."""
    path = Path(folder) / CARD_FILE
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EdgeDSEError(f"{path} is unreadable ({exc}): re-make the model with `edge-dse export`") from exc
    if not isinstance(card, dict):
        raise EdgeDSEError(f"{path} holds no JSON object: re-make the model with `edge-dse export`")
    return card


def write_card(folder: str | os.PathLike, card: dict) -> Path:
    """Write a card.json (indented, UTF-8, as the shipped cards are); returns its path."""
    path = Path(folder) / CARD_FILE
    path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def default_model_name() -> str:
    """The first of config.DEFAULT_MODELS that ships and qualifies: a student leads only when its
    card records a passing promotion ("promotion": {"default": true}); the last one needs none."""
    for name in config.DEFAULT_MODELS:
        folder = config.assets_dir() / name
        if not has_card(folder):
            continue
        if name == config.DEFAULT_MODELS[-1]:
            return name
        try:
            if (read_card(folder).get("promotion") or {}).get("default") is True:
                return name
        except EdgeDSEError:  # a broken card never makes its model the default
            continue
    return config.DEFAULT_MODELS[-1]


def shipped_cards() -> dict[str, dict]:
    """name -> card of every model folder under assets/ (a broken card as {"id": name, "error": ...})."""
    out = {}
    for folder in sorted(config.assets_dir().glob("*")):
        if has_card(folder):
            try:
                out[folder.name] = read_card(folder)
            except EdgeDSEError as exc:
                out[folder.name] = {"id": folder.name, "error": str(exc)}
    return out


def _default_id() -> str | None:
    """The id of the shipped default encoder (None when none ships)."""
    folder = config.assets_dir() / default_model_name()
    try:
        return read_card(folder).get("id") if has_card(folder) else None
    except EdgeDSEError:
        return None


def kind_of(card: dict) -> str:
    """A card's kind: as written, else inferred (encoder cards record a pooling, teachers do not)."""
    return card.get("kind") or ("bi-encoder" if card.get("pooling") else "cross-encoder")


def role_of(card: dict) -> str:
    """The role a card's model plays: a cross-encoder is the teacher; the encoder whose id is the
    shipped default's is the default encoder (a copy elsewhere is the same model); any other
    encoder is opt-in. A model loaded as the teacher gets TEACHER from its loader, whatever its kind."""
    if kind_of(card) == "cross-encoder":
        return TEACHER
    return DEFAULT if card.get("id") and card.get("id") == _default_id() else OPT_IN


def card_depth(card: dict, folder: str | os.PathLike = "the teacher") -> int:
    """The rerank depth a teacher's card records ("rerank": {"default_depth": N}), else DEFAULT_DEPTH."""
    depth = (card.get("rerank") or {}).get("default_depth", DEFAULT_DEPTH)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise EdgeDSEError(f"{Path(folder) / CARD_FILE}: rerank.default_depth is {depth!r}, not a number of "
                           "hits >= 1: fix the card or re-make the teacher with `edge-dse distill`")
    return depth


def _weight(w, where: str, folder: str | os.PathLike) -> float:
    if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
        raise EdgeDSEError(f"{Path(folder) / CARD_FILE}: {where} is {w!r}, not a number >= 0: "
                           "fix the card or re-make the teacher with `edge-dse distill`")
    return float(w)


def card_encoder_weight(card: dict, folder: str | os.PathLike = "the teacher") -> float:
    """The weight of the encoder's order in a teacher card's blend (rerank.blend; "rerank":
    {"encoder_weight": w}), else 0: the teacher alone. Chosen on the vector encoder's order; a
    search mode with a weight of its own uses that (card_encoder_weight_by_mode)."""
    return _weight((card.get("rerank") or {}).get("encoder_weight", 0.0), "rerank.encoder_weight", folder)


def card_encoder_weight_by_mode(card: dict, folder: str | os.PathLike = "the teacher") -> dict[str, float]:
    """The blend weights a teacher's card records per search mode ("rerank":
    {"encoder_weight_by_mode": {"hybrid": w}}; modes.MODES), else {}: each mode's hits come in
    that mode's order, and a better first stage wants more of its order kept."""
    by_mode = (card.get("rerank") or {}).get("encoder_weight_by_mode") or {}
    if not isinstance(by_mode, dict):
        raise EdgeDSEError(f"{Path(folder) / CARD_FILE}: rerank.encoder_weight_by_mode is {by_mode!r}, not "
                           "{mode: weight}: fix the card or re-make the teacher with `edge-dse distill`")
    unknown = sorted(set(by_mode) - set(MODES))
    if unknown:
        raise EdgeDSEError(f"{Path(folder) / CARD_FILE}: rerank.encoder_weight_by_mode names {', '.join(map(repr, unknown))}, "
                           f"not a search mode ({', '.join(MODES)}): fix the card or re-make the teacher with `edge-dse distill`")
    return {m: _weight(w, f"rerank.encoder_weight_by_mode.{m}", folder) for m, w in by_mode.items()}


@dataclass(frozen=True)
class ModelCard:
    """A model folder's card, read and checked once. `data` is the card as written (training,
    evaluation and other records ride along); the fields are what the run time uses."""

    folder: Path
    data: dict = field(repr=False)
    id: str
    name: str
    kind: str
    role: str
    dim: int
    pooling: str
    normalize: bool
    max_length: int
    output: str | None
    query_prefix: str
    document_prefix: str
    model_file: Path
    tokenizer_file: Path

    @classmethod
    def load(cls, folder: str | os.PathLike, *, role: str | None = None) -> "ModelCard":
        """Read and check a model folder: its three files are there and its card is sound."""
        folder = Path(folder)
        missing = [n for n in FILES if not (folder / n).is_file()]
        if missing:
            raise EdgeDSEError(
                f"model folder {folder} lacks {', '.join(missing)}: re-make it with `edge-dse export` "
                "or pass a complete model folder"
            )
        return cls.from_dict(read_card(folder), folder, role=role)

    @classmethod
    def from_dict(cls, card: dict, folder: str | os.PathLike, *, model_file: str | os.PathLike | None = None,
                  tokenizer_file: str | os.PathLike | None = None, role: str | None = None) -> "ModelCard":
        """A card not (yet) in a complete folder: the export measures its graph with the run-time
        Encoder before the asset folder exists. Checked as `load` checks a folder's card."""
        folder = Path(folder)
        where = folder / CARD_FILE
        for key in ("id", "dim"):
            if key not in card:
                raise EdgeDSEError(f"{where} has no {key!r}: re-make the model with `edge-dse export`")
        kind = kind_of(card)
        if kind not in KINDS:
            raise EdgeDSEError(f"{where}: unknown kind {kind!r} (expected one of {KINDS})")
        pooling = card.get("pooling", "mean")
        if kind == "bi-encoder" and pooling not in POOLINGS:
            raise EdgeDSEError(f"{where}: unknown pooling {pooling!r} (expected one of {POOLINGS})")
        if role is not None and role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        try:
            dim, max_length = int(card["dim"]), int(card.get("max_length", DEFAULT_MAX_LENGTH))
        except (TypeError, ValueError) as exc:
            raise EdgeDSEError(f"{where}: dim and max_length must be numbers ({exc})") from exc
        # The name a user types: a shipped model is `--model FOLDER` (the teacher's card says
        # "asset", the folder it was built in); a model elsewhere goes by its card's name.
        shipped = folder.parent.resolve() == config.assets_dir().resolve()
        name = folder.name if shipped else (card.get("name") or folder.name)
        return cls(
            folder=folder, data=card, id=str(card["id"]), name=str(name), kind=kind,
            role=role or role_of(card), dim=dim, pooling=pooling,
            normalize=bool(card.get("normalize", True)), max_length=max_length,
            output=card.get("output"), query_prefix=card.get("query_prefix", ""),
            document_prefix=card.get("document_prefix", ""),
            model_file=Path(model_file) if model_file else folder / MODEL_FILE,
            tokenizer_file=Path(tokenizer_file) if tokenizer_file else folder / TOKENIZER_FILE,
        )

    @property
    def default_depth(self) -> int:
        """How many of the encoder's top hits this teacher re-scores unless told otherwise."""
        return card_depth(self.data, self.folder)

    @property
    def encoder_weight(self) -> float:
        """How much of the encoder's order this teacher's rerank keeps (rerank.blend); 0: none."""
        return card_encoder_weight(self.data, self.folder)

    @property
    def encoder_weight_by_mode(self) -> dict[str, float]:
        """The blend weights this teacher's card records per search mode ({} when none)."""
        return card_encoder_weight_by_mode(self.data, self.folder)

    def encoder_weight_for(self, mode: str) -> float:
        """How much of the first stage's order this teacher's rerank keeps for hits ranked by
        search `mode` (modes.MODES): the card's weight for that mode, else encoder_weight."""
        if mode not in MODES:
            raise EdgeDSEError(f"unknown search mode {mode!r}: use one of {', '.join(MODES)}")
        return self.encoder_weight_by_mode.get(mode, self.encoder_weight)


# -- labels --------------------------------------------------------------------------------------
def label(card: ModelCard, *, short: bool = False) -> str:
    """How the CLI and the UI name a model: "baseline (default encoder)", or with `short` just
    "baseline" (where the role is said once already, e.g. "new (baseline #18)")."""
    return card.name if short else f"{card.name} ({ROLE_TITLES[card.role]})"


def role_text(role: str) -> str:
    """A role in one line: "default encoder: embeds every new library (...)"."""
    return f"{ROLE_TITLES[role]}: {ROLE_DUTIES[role]}"


def shipped_label(model_id: str) -> str:
    """The label of the shipped model with this id (a library records only the id), else the id."""
    for name, card in shipped_cards().items():
        if card.get("id") == model_id and "error" not in card:
            try:
                return label(ModelCard.from_dict(card, config.assets_dir() / name))
            except EdgeDSEError:
                break
    return model_id


# -- running a model -----------------------------------------------------------------------------
def load_tokenizer(path: str | os.PathLike, max_length: int):
    """tokenizer.json with the run time's settings. tokenizer.json files carry their own
    truncation and padding (all-MiniLM-L6-v2's pads every text to a fixed 128): override both,
    truncating at the card's length (a (query, passage) pair loses from its longer side first)
    and padding each batch only to its longest member (`Tokenized.feeds`)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.enable_truncation(max_length=int(max_length), strategy="longest_first")
    return tok


def make_session(model_file: str | os.PathLike, threads: int | None = None):
    """The onnxruntime session every model runs in: CPU, `threads` intra-op threads (default:
    config.default_threads(), set because onnxruntime's own default can oversubscribe the
    cores), one inter-op thread, sequential, all graph optimisations, warnings off."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or config.default_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(model_file), opts, providers=["CPUExecutionProvider"])


def run_session(session, output: str, feeds: dict) -> "np.ndarray":
    """One output of a session, fed only the inputs its graph has (not every graph reads
    token_type_ids)."""
    names = {i.name for i in session.get_inputs()}
    return session.run([output], {k: v for k, v in feeds.items() if k in names})[0]


def output_name(session, card: ModelCard) -> str:
    """The graph output a card names, else the graph's first."""
    return card.output or session.get_outputs()[0].name


def pool(hidden: "np.ndarray", mask: "np.ndarray", pooling: str) -> "np.ndarray":
    """A graph's per-token output -> one vector per text, as sentence-transformers pools: mean
    over the attention mask (clamped at 1e-9), the first ([CLS]) token, or "none" (the graph
    pools itself)."""
    import numpy as np

    if pooling == "mean":
        weights = mask[:, :, None].astype(np.float32)
        return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    if pooling == "cls":
        return hidden[:, 0]
    return hidden


def token_budget_batches(order: list[int], lengths: list[int], batch_size: int, max_tokens: int) -> list[list[int]]:
    """Cut `order` (sorted longest first) into batches of at most batch_size texts whose padded
    size (count x longest) stays within max_tokens; a single text always makes a batch."""
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= max_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


@dataclass
class Tokenized:
    """Token ids of some inputs, kept as small arrays: a tokenizers Encoding also holds offsets,
    tokens and masks (~100 bytes a token), which for 15k passages is most of a gigabyte."""

    ids: list
    types: list

    def __len__(self) -> int:
        return len(self.ids)

    def batches(self, batch_size: int = 32, max_batch_tokens: int = MAX_BATCH_TOKENS) -> list[list[int]]:
        """Row indexes in batches, longest first: sorting by length keeps the padding in each
        batch small (long and short inputs are not mixed, which matters most on a CPU), and the
        token budget keeps memory bounded (short queries go many at a time, long passages few)."""
        lengths = [len(x) for x in self.ids]
        order = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)
        return token_budget_batches(order, lengths, batch_size, max_batch_tokens)

    def feeds(self, batch: Sequence[int]) -> dict[str, "np.ndarray"]:
        """A batch padded to its longest member: input_ids, attention_mask, token_type_ids."""
        import numpy as np

        width = max(len(self.ids[i]) for i in batch)
        ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, i in enumerate(batch):
            n = len(self.ids[i])
            ids[row, :n] = self.ids[i]
            mask[row, :n] = 1
            types[row, :n] = self.types[i]
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def tokenize(tokenizer, inputs: Sequence[str | tuple[str, str]]) -> Tokenized:
    """Texts, or (query, passage) pairs, -> their token ids (with the tokenizer's special tokens)."""
    import numpy as np

    ids: list = []
    types: list = []
    for lo in range(0, len(inputs), TOKENIZE_WINDOW):
        for enc in tokenizer.encode_batch(list(inputs[lo: lo + TOKENIZE_WINDOW])):
            ids.append(np.asarray(enc.ids, dtype=np.int32))
            types.append(np.asarray(enc.type_ids, dtype=np.int8))
    return Tokenized(ids, types)


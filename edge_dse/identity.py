"""What a library records about how it was built (invariant 4), in its catalog's meta table: the
model (id, dimension, pooling, name) and the settings that shaped what it stores (IndexSpec).

`Identity` works out the model and the IndexSpec a Library opens with, refuses ones that differ
from the recorded ones (one line naming `edge-dse reindex ...`), and records them when a library
is created or reindexed. It imports nothing heavy (invariant 3).
"""

from __future__ import annotations

import os
from dataclasses import replace

from . import config, models
from .encoder import MIN_MAX_LENGTH, Encoder, chunk_tokens, max_length_for
from .errors import EdgeDSEError, IndexSpecMismatchError, ModelMismatchError
from .index_spec import IndexSpec, rebuild_flags
from .models import ModelCard


def shipped_model_that_built_it(catalog) -> str | None:
    """With no model named, an existing library opens with the shipped model that built it
    (a library made with the baseline keeps working when the student becomes the default);
    None, the default, for a new library or one built with a model from elsewhere."""
    name, stored = catalog.get_meta("model_name"), catalog.get_meta("model_id")
    if not name or not stored or name == config.default_model_name():
        return None
    folder = config.assets_dir() / name
    try:
        if models.has_card(folder) and models.read_card(folder).get("id") == stored:
            return name
    except EdgeDSEError:
        pass
    return None


class Identity:
    """The model and IndexSpec of a library (see the module's docstring).

    Args:
        catalog: the library's Catalog. path: the library folder (named in errors).
        model: a shipped model name, a model folder or an Encoder (None: the default).
        readonly: check only, never record.
        max_length: the encoder's window given (else the model's, or the Encoder's own).
        given: IndexSpec fields given explicitly (None: not given).
    """

    def __init__(self, catalog, path, model: str | os.PathLike | Encoder | None, *, readonly: bool = False,
                 max_length: int | None = None, given: dict | None = None) -> None:
        self.catalog = catalog
        self.path = path
        self.model_arg = model
        self.readonly = readonly
        self.max_length = max_length
        self.given = {name: value for name, value in (given or {}).items() if value is not None}
        self._model: ModelCard | None = None
        self._spec: IndexSpec | None = None

    @property
    def model(self) -> ModelCard:
        """The checked card of the model (read on first use)."""
        if self._model is None:
            arg = self.model_arg
            self._model = arg.model if isinstance(arg, Encoder) else ModelCard.load(config.resolve_model_dir(arg))
        return self._model

    def check(self) -> None:
        """Refuse a model or settings other than the recorded ones; record what the library lacks."""
        self._check_model()
        self._check_spec()

    # -- the model ----------------------------------------------------------------------------
    def _check_model(self) -> None:
        stored = self.catalog.get_meta("model_id")
        card = self.model.data
        if stored is None:
            if not self.readonly:
                self.record()
            return
        stored_dim = self.catalog.get_meta("model_dim")
        if stored != card["id"] or str(stored_dim) != str(card["dim"]):
            raise ModelMismatchError(
                f"library {self.path} was built with model {stored!r} (dim {stored_dim}), not "
                f"{card['id']!r} (dim {card['dim']}): open it with that model, or re-embed it with "
                f"`edge-dse reindex --library {self.path}{self.model_option()}`"
            )

    def model_option(self) -> str:
        """The --model option that names the model on the command line ("" = default)."""
        if self.model_arg is None:
            return ""
        arg = self.model_arg.path if isinstance(self.model_arg, Encoder) else self.model_arg
        is_folder = os.path.isdir(arg)
        return f" --model {os.path.abspath(arg) if is_folder else arg}"

    def record(self) -> None:
        """Record the model and the IndexSpec (a new library, or a reindex)."""
        card = self.model.data
        spec = self.spec  # worked out before the model's rows change: it reads them
        with self.catalog.transaction():
            self.catalog.set_meta("model_id", card["id"])
            self.catalog.set_meta("model_dim", str(card["dim"]))
            self.catalog.set_meta("model_pooling", card.get("pooling", "mean"))
            self.catalog.set_meta("model_name", card.get("name", ""))
            # The settings the stored text and graph depend on, chunk size included (Encoder.chunking):
            # recorded with the model, so a change of either re-chunks on `reindex`, and status says
            # how the text was cut.
            for key, value in spec.meta().items():
                self.catalog.set_meta(key, value)

    # -- the settings (IndexSpec) --------------------------------------------------------------
    @property
    def spec(self) -> IndexSpec:
        """Each setting given, else the one the library records, else the default. A recorded
        chunk size counts only for the model that cut the chunks: a reindex to another model cuts
        for its window unless told otherwise."""
        if self._spec is None:
            recorded = IndexSpec.recorded(self.catalog.get_meta)
            if self.catalog.get_meta("model_id") != self.model.id:
                recorded.pop("chunk_tokens", None)
            given = dict(self.given)
            if (tokens := self._given_chunk_tokens()) is not None:
                given["chunk_tokens"] = tokens
            self._spec = replace(IndexSpec.default(chunk_tokens(self.model.max_length)), **{**recorded, **given})
        return self._spec

    def _given_chunk_tokens(self) -> int | None:
        """The chunk size given: an Encoder's window, or max_length (checked against the model)."""
        if isinstance(self.model_arg, Encoder):
            if self.max_length is not None and self.max_length != self.model_arg.max_length:
                raise EdgeDSEError(f"max_length {self.max_length} differs from the Encoder's {self.model_arg.max_length}: "
                                   "give it to the Encoder (Encoder(..., max_length=N)), or pass the model's name")
            return self.model_arg.chunk_tokens
        if self.max_length is None:
            return None
        largest = self.model.max_length
        if not MIN_MAX_LENGTH <= self.max_length <= largest:
            raise EdgeDSEError(f"a max length of {self.max_length} tokens does not fit model {self.model.id}: "
                               f"give --max-length (max_length) from {MIN_MAX_LENGTH} to {largest}")
        return chunk_tokens(self.max_length)

    def _check_spec(self) -> None:
        """Refuse settings given that differ from the recorded ones; record those the library
        lacks (one made before they were recorded adopts the current ones)."""
        recorded = IndexSpec.recorded(self.catalog.get_meta)
        differences = self.spec.differences(recorded)
        if differences:
            flags = rebuild_flags(self.spec, {d.split(" ", 1)[0] for d in differences},
                                  max_length=max_length_for(self.spec.chunk_tokens))
            raise IndexSpecMismatchError(
                f"library {self.path} was built with other settings ({'; '.join(differences)}): open it "
                f"without them to use its own, or rebuild it with them with "
                f"`edge-dse reindex --library {self.path}{self.model_option()}{flags}`")
        # A library from before chunks were counted in tokens was cut by characters: no chunk size
        # is recorded for it until a reindex cuts it again (status tells the two apart).
        missing = {key: value for key, value in self.spec.meta().items()
                   if key not in recorded and key != "chunk_tokens"}
        if missing and not self.readonly:
            with self.catalog.transaction():
                for key, value in missing.items():
                    self.catalog.set_meta(key, value)

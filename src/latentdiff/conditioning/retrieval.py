"""Retrieval-augmented text conditioning (Re-Imagen; Chen et al. 2022, Sec. 3): besides the prompt,
the denoiser attends to the k (image, caption) pairs of a database nearest to the prompt.

The database is the training set: its captions (`retrieval.TextIndex`, TF-IDF keys, exact search)
and the normalised latents z = s·(E(x) − shift) of its images, a buffer saved with the conditioner's
weights. For prompt y with neighbours n_1 … n_k the cross-attention context is

    [τ_θ(y) ; τ_θ(caption(n_j)) + e_j ; P·z(n_j) + p + e_j  for j = 1 … k]   (B, L + k·(L + h·w), d)

with P a learned projection of each latent pixel (c → d), p a learned position per latent pixel and
e_j a learned embedding of the neighbour's rank. Re-Imagen encodes the neighbour images with the
UNet's own encoder and attends to its features; here the frozen first stage already gives a compact
image code, so the references cost one linear layer. A training image never retrieves itself.

Two null conditions make guidance possible: the empty prompt with the references kept (text
dropped, `conditioning.drop_prob`) and the prompt with the references hidden
(`conditioning.retrieval.drop_prob`, drawn independently): hidden references are masked out of the
attention. A query is a prompt (references retrieved by it; "" hides them) or a `Query` that names
the text and the prompt the references are retrieved by separately.
"""

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from latentdiff.conditioning import Cond
from latentdiff.conditioning.text import CaptionTokenizer, TextConditioner
from latentdiff.conditioning.tokens import Tokens
from latentdiff.config import ConditioningConfig
from latentdiff.data import ImageData
from latentdiff.errors import UserError
from latentdiff.retrieval import TextIndex


@dataclass(frozen=True)
class RetrievedTokens(Tokens):
    """The prompts' tokens (ids, mask (B, L)), the database rows of their k neighbours
    (neighbours (B, k) int64) and which of them are seen (shown (B, k) bool; False: hidden, the
    null references)."""

    neighbours: torch.Tensor
    shown: torch.Tensor

    def to(self, device: torch.device | str) -> "RetrievedTokens":
        return RetrievedTokens(*(getattr(self, f.name).to(device) for f in dataclasses.fields(self)))

    def __getitem__(self, index) -> "RetrievedTokens":
        return RetrievedTokens(*(getattr(self, f.name)[index] for f in dataclasses.fields(self)))


@dataclass(frozen=True)
class Query:
    """A prompt `text` with the references of the prompt `retrieve_by` (None: no references)."""

    text: str
    retrieve_by: str | None


def as_query(value: "str | Query") -> Query:
    """A plain prompt retrieves by itself; the empty prompt (the null condition) retrieves nothing."""
    return value if isinstance(value, Query) else Query(value, value or None)


class RetrievalConditioner(TextConditioner):
    """Prompts → the context of the prompt and its retrieved references (see the module)."""

    kind = "retrieval"
    retrieves = True

    def __init__(self, cfg: ConditioningConfig, tokenizer: CaptionTokenizer,
                 semantic_classes: int = 0, image_channels: int = 3):
        if not isinstance(tokenizer, CaptionTokenizer):
            raise UserError("conditioning.kind=retrieval trains its text encoder with the UNet; "
                            "unset conditioning.text.pretrained")
        super().__init__(cfg, tokenizer, semantic_classes, image_channels)
        self.index: TextIndex | None = None

    # --- the database
    def set_database(self, latents: torch.Tensor, captions: list[str]) -> None:
        """The database: normalised latents (N, c, h, w) and their captions; builds the index and
        the layers that embed the references (their sizes follow the latents)."""
        if len(latents) != len(captions):
            raise ValueError(f"{len(latents)} latents for {len(captions)} captions")
        if len(captions) <= self.k:
            raise UserError(f"conditioning.retrieval.neighbours={self.k} needs a database of more "
                            f"than {self.k} images; this one has {len(captions)}")
        c, h, w = latents.shape[1:]
        width = self.context_dim
        self.index = TextIndex(captions)
        self.register_buffer("database", latents.detach().float().cpu().clone())
        self.latent_projection = nn.Linear(c, width)
        self.latent_position = nn.Parameter(torch.randn(h * w, width) * 0.02)
        self.neighbour_embedding = nn.Parameter(torch.randn(self.k, width) * 0.02)
        self._tokenize_database()

    def _tokenize_database(self) -> None:
        tokens = self.tokenizer(self.index.captions)
        device = self.database.device
        self.register_buffer("database_ids", tokens.ids.to(device), persistent=False)
        self.register_buffer("database_mask", tokens.mask.to(device), persistent=False)

    @property
    def k(self) -> int:
        return self.config.retrieval.neighbours

    def _need_database(self) -> TextIndex:
        if self.index is None:
            raise UserError("this retrieval model has no database yet; it is set when training "
                            "starts (`latentdiff train`)")
        return self.index

    # --- y → context
    def encode(self, tokens: Tokens) -> Cond:
        """τ_θ(prompt) followed by the k references' caption and latent tokens (module docstring);
        hidden references are masked out."""
        text = super().encode(Tokens(tokens.ids, tokens.mask))
        if not isinstance(tokens, RetrievedTokens):
            return text
        B, k = tokens.neighbours.shape
        rows = tokens.neighbours.flatten()
        captions = super().encode(Tokens(self.database_ids[rows], self.database_mask[rows]))
        caption_context = captions.context.unflatten(0, (B, k)) + self.neighbour_embedding[:, None]
        z = self.database[rows].flatten(2).transpose(1, 2)  # (B·k, h·w, c)
        image_context = (self.latent_projection(z) + self.latent_position).unflatten(0, (B, k))
        image_context = image_context + self.neighbour_embedding[:, None]
        shown = tokens.shown[:, :, None]
        caption_mask = captions.context_mask.unflatten(0, (B, k)) & shown
        image_mask = shown.expand(B, k, image_context.shape[2])
        return Cond(context=torch.cat([text.context, caption_context.flatten(1, 2),
                                       image_context.flatten(1, 2)], 1),
                    context_mask=torch.cat([text.context_mask, caption_mask.flatten(1),
                                            image_mask.flatten(1)], 1))

    def retrieve(self, queries: list) -> RetrievedTokens:
        """Prompts or `Query`s → their tokens and references (on the CPU)."""
        index = self._need_database()
        queries = [as_query(q) for q in queries]
        tokens = self.tokens([q.text for q in queries])
        neighbours, _ = index.search([q.retrieve_by or "" for q in queries], self.k)
        shown = torch.tensor([q.retrieve_by is not None for q in queries])[:, None]
        return RetrievedTokens(tokens.ids, tokens.mask, neighbours, shown.expand(-1, self.k))

    def condition(self, inputs: list, device: torch.device | str) -> Cond:
        return self.encode(self.retrieve(inputs).to(device))

    def null_inputs(self, inputs: list) -> list:
        """Text guidance's null: the empty prompt with each prompt's references kept."""
        return [Query("", as_query(q).retrieve_by) for q in inputs]

    def reference_null_inputs(self, inputs: list) -> list:
        """Reference guidance's null: each prompt with its references hidden."""
        return [Query(as_query(q).text, None) for q in inputs]

    # --- training
    def dataset_conditions(self, data: ImageData) -> tuple[Tokens, torch.Tensor]:
        """The tokens of every training caption and the null prompt (row len(data)), and every
        training image's k neighbours in the database, itself excluded (N, k)."""
        index = self._need_database()
        if list(data.captions) != index.captions:
            raise ValueError("the retrieval database must be the training data")
        neighbours, _ = index.search(list(data.captions), self.k, exclude=torch.arange(len(data)))
        return super().dataset_conditions(data), neighbours

    def batch_condition(self, data: ImageData, index: torch.Tensor, generator: torch.Generator,
                        codec, latent_size: tuple[int, int], drop: torch.Tensor, cached=None,
                        hide: torch.Tensor | None = None) -> Cond:
        """`drop` (B,): rows trained on the empty prompt; `hide` (B,): rows trained without their
        references."""
        tokens, neighbours = self.dataset_conditions(data) if cached is None else cached
        rows = torch.where(drop, len(data), index)
        shown = ~(torch.zeros_like(drop) if hide is None else hide)
        return Cond(tokens=RetrievedTokens(tokens.ids[rows], tokens.mask[rows], neighbours[index],
                                           shown[:, None].expand(-1, self.k)))

    # --- checkpoints
    @classmethod
    def from_metadata(cls, cfg: ConditioningConfig, metadata: dict,
                      folder: Path) -> "RetrievalConditioner":
        """The stored vocabulary and database captions; the latents come with the weights."""
        conditioner = super().from_metadata(cfg, metadata, folder)
        captions = metadata["retrieval_captions"]
        with torch.random.fork_rng(devices=[]):  # loading leaves the global RNG as it was
            conditioner.set_database(torch.zeros(len(captions),
                                                 *metadata["retrieval_latent_shape"]), captions)
        return conditioner

    def metadata(self) -> dict:
        index = self._need_database()
        return {**super().metadata(), "retrieval_captions": index.captions,
                "retrieval_latent_shape": list(self.database.shape[1:])}

    def resume(self, metadata: dict) -> None:
        super().resume(metadata)
        if self.index is not None:
            self._tokenize_database()

    def initial_state(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Starting from a text model (`init_from`): its τ_θ, with the reference layers and the
        database as they are."""
        own = {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}
        return {**own, **tensors}

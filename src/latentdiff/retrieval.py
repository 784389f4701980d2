"""The retrieval database of retrieval-augmented generation (Re-Imagen; Chen et al. 2022, Sec. 3.1):
(image, text) pairs looked up by the prompt, whose k nearest neighbours the denoiser also sees.

Re-Imagen retrieves by the text (BM25 or CLIP embeddings of the prompt against the database's
captions). Here the key is a TF-IDF vector of the caption's words — a lexical retriever in BM25's
family that needs no pretrained model: word w of a caption weighs tf(w)·idf(w) with
idf(w) = log((1 + N)/(1 + df(w))) + 1 over the N database captions, and every vector is L2-normalised,
so that similarity is the cosine ⟨e(q), e(d)⟩. Search is exact: all N similarities (float64,
rounded to 1e-9 so that captions with the same words tie whatever the summation order), the k
largest, ties broken by the lower database row. Vectors are dense (N, V): a few thousand captions of
a few thousand words.
"""

import math
import re
from collections import Counter
from collections.abc import Sequence

import torch

WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """A caption's lower-cased alphanumeric words ("medium-dark" → "medium", "dark")."""
    return WORD.findall(text.lower())


class TextIndex:
    """TF-IDF keys of the database captions (N, V) and exact k-nearest-neighbour search over them.
    Built from the captions alone, so a checkpoint stores the captions and rebuilds its index."""

    def __init__(self, captions: Sequence[str]):
        if not captions:
            raise ValueError("a retrieval database needs at least one caption")
        self.captions = list(captions)
        documents = [words(c) for c in self.captions]
        frequency = Counter(w for doc in documents for w in set(doc))
        self.vocabulary = {w: i for i, w in enumerate(sorted(frequency))}
        n = len(documents)
        self.idf = torch.tensor([math.log((1 + n) / (1 + frequency[w])) + 1
                                 for w in sorted(frequency)], dtype=torch.float64)
        self.keys = self.embed(self.captions)  # (N, V)

    def __len__(self) -> int:
        return len(self.captions)

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts → (B, V) L2-normalised TF-IDF vectors; words outside the vocabulary are dropped
        (a text with none is the zero vector, equally far from every caption)."""
        out = torch.zeros(len(texts), len(self.vocabulary), dtype=torch.float64)
        for row, text in enumerate(texts):
            for word, count in Counter(words(text)).items():
                if word in self.vocabulary:
                    out[row, self.vocabulary[word]] = count
        out = out * self.idf
        return out / out.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def search(self, texts: Sequence[str], k: int,
               exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The k nearest database rows of each text: (indices (B, k) int64, cosines (B, k)), most
        similar first, ties by the lower row. `exclude` (B,): a row per text never returned (the
        training image itself, whose own caption would otherwise be its nearest neighbour); −1 for
        none."""
        limit = len(self) - (exclude is not None)
        if not 1 <= k <= limit:
            raise ValueError(f"k={k} neighbours from a database of {len(self)} captions"
                             f"{' less the excluded one' if exclude is not None else ''}")
        scores = (self.embed(texts) @ self.keys.T * 1e9).round() / 1e9  # (B, N)
        if exclude is not None:
            rows = torch.arange(len(texts))[exclude >= 0]
            scores[rows, exclude[exclude >= 0]] = -math.inf
        # a stable sort keeps equal scores in row order: ties go to the lower row
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
        return order, scores.gather(1, order)

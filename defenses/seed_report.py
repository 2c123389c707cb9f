"""The seed report's published figures, kept as data with their source so that pages can set a team's results
beside them: the course project report "Fine-Pruning" on the CSAW-HackML-2020 BadNets of YouTube Face (the
project's `shared/seed/` text). Its Figures 2-4 are pictures whose points the text does not state, so only
its Tables 1-3 are here, copied digit for digit.

Its score is "the average value between the Accuracy and 1-Attack Success Rate", (CA + 100 - ASR) / 2 in
percent, measured on the test sets (the report chose its point by it). Its BadNets are CSAW-HackML-2020's,
which `CSAW_WEIGHTS` names by the SHA-256 of their published weight files, so a team that uploads one of them
sees the report's row for it.
"""

SOURCE = "the seed report (Fine-Pruning on CSAW-HackML-2020, shared/seed/)"

# Table 1: Grid Search Result: (T, LR, epochs) -> score. The report does not say on which BadNet.
TABLE_1 = {
    (0.8, 0.001, 30): 93.569,
    (0.8, 0.003, 30): 90.810,
    (0.8, 0.005, 30): 89.840,
    (1.0, 0.001, 30): 92.725,
    (1.0, 0.003, 30): 90.574,
    (1.0, 0.005, 30): 88.734,
    (1.2, 0.001, 30): 92.641,
    (1.2, 0.003, 30): 90.568,
    (1.2, 0.005, 30): 88.998,
    (0.8, 0.001, 33): 93.427,
    (0.8, 0.003, 33): 91.184,
    (0.8, 0.005, 33): 88.801,
    (1.0, 0.001, 33): 93.208,
    (1.0, 0.003, 33): 90.470,
    (1.0, 0.005, 33): 89.003,
    (1.2, 0.001, 33): 92.620,
    (1.2, 0.003, 33): 90.720,
    (1.2, 0.005, 33): 89.276,
    (0.8, 0.001, 35): 92.848,
    (0.8, 0.003, 35): 91.500,
    (0.8, 0.005, 35): 90.116,
    (1.0, 0.001, 35): 93.017,
    (1.0, 0.003, 35): 91.391,
    (1.0, 0.005, 35): 89.858,
    (1.2, 0.001, 35): 92.702,
    (1.2, 0.003, 35): 90.874,
    (1.2, 0.005, 35): 89.726,
}
TABLE_1_CHOICE = (0.8, 0.001, 30)  # "we chose PT=0.8, LR=0.001, and Epoch=30"

# Table 2: Fine-tune with and without prune, LR=0.001, epoch=30 (the report's T for "with": 0.8, its choice)
TABLE_2 = {
    "sunglasses": {
        "with prune": {"ca": 84.34138737334372, "asr": {"sunglasses": 0.39750584567420105}},
        "without prune": {"ca": 84.8012470771629, "asr": {"sunglasses": 0.02338269680436477}},
    },
    "anonymous 1": {
        "with prune": {"ca": 87.71628994544038, "asr": {"anonymous 1": 0.2240841777084957}},
        "without prune": {"ca": 87.38893219017928, "asr": {"anonymous 1": 3.926344505066251}},
    },
    "multi-trigger multi-target": {
        "with prune": {
            "ca": 86.66406858924395,
            "asr": {"sunglasses": 0.0, "eyebrows": 0.009742790335151987, "lipstick": 0.09742790335151988},
        },
        "without prune": {
            "ca": 87.06157443491817,
            "asr": {"sunglasses": 0.0, "eyebrows": 0.009742790335151987, "lipstick": 2.5526110678098206},
        },
    },
}

# Table 3: Summary: each BadNet's CA and ASR before and after (the report's GoodNet); None where it says "/"
TABLE_3 = {
    "sunglasses": {
        "badnet_ca": 97.88689702953148,
        "goodnet_ca": 84.34138737334372,
        "badnet_asr": {"sunglasses": 99.99220576773187},
        "goodnet_asr": {"sunglasses": 0.39750584567420105},
    },
    "anonymous 1": {
        "badnet_ca": 97.17675586732484,
        "goodnet_ca": 87.71628994544038,
        "badnet_asr": {"anonymous 1": 91.3971161340608},
        "goodnet_asr": {"anonymous 1": 0.2240841777084957},
    },
    "anonymous 2": {
        "badnet_ca": 95.82575560751711,
        "goodnet_ca": 86.51597817614964,
        "badnet_asr": None,
        "goodnet_asr": None,
    },
    "multi-trigger multi-target": {
        "badnet_ca": 96.26742876937733,
        "goodnet_ca": 86.66406858924395,
        "badnet_asr": {"sunglasses": 100.0, "eyebrows": 91.34840218238503, "lipstick": 91.52377240841777},
        "goodnet_asr": {"sunglasses": 0.0, "eyebrows": 0.009742790335151987, "lipstick": 0.09742790335151988},
    },
}

# SHA-256 of CSAW-HackML-2020's published weight files (models/*_bd_weights.h5) -> the report's row name
CSAW_WEIGHTS = {
    "22322bcef622afc817ebf2a3fd836b353423ab48e9863c83e4c02d6838fc4f0d": "sunglasses",
    "7921670af9bc6cc5cd3d4ec35668c9fdfe859886629e2bc319cd5d8d9912fe5c": "anonymous 1",
    "f4bde8b26be089bed608ea14eb8e5bd37493c600035fb0d7e9d7a9a3b9086881": "anonymous 2",
    "0296dc09bb73bcbc439e02fb3af12f3db174b1fcc58287719c104286e77b728a": "multi-trigger multi-target",
}


def table_1_beside(scores: dict[tuple[float, float, int], float | None]) -> list[dict]:
    """Table 1's cells beside `scores` ((T, LR, epochs) -> a team's score there, None when not measured), one
    row per epochs value, each cell {"t", "lr", "report", "ours", "difference"}; [] when `scores` holds none
    of Table 1's points."""
    scores = {(round(t, 6), round(lr, 9), int(e)): value for (t, lr, e), value in scores.items()}
    if not any(key in scores for key in TABLE_1):
        return []
    rows = []
    for epochs in sorted({key[2] for key in TABLE_1}):
        cells = []
        for (t, lr, e), report in TABLE_1.items():
            if e != epochs:
                continue
            ours = scores.get((t, lr, e))
            difference = None if ours is None else ours - report
            chosen = (t, lr, e) == TABLE_1_CHOICE
            cells.append({"t": t, "lr": lr, "report": report, "ours": ours, "difference": difference, "chosen": chosen})
        rows.append({"epochs": epochs, "cells": cells})
    return rows

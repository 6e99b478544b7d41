"""Write churn.csv: a small synthetic customer-churn table, the kind of data a first real model is trained on.

Mixed column types on purpose: numbers, categories (one with a fixed set of values), yes/no and true/false
columns, missing values in four columns, an ID column that is not a feature, and string labels
("churned"/"stayed"). Deterministic (seeded), so the file and its sha256 digest are the same on every run:

    python examples/churn/make_data.py            # writes examples/churn/churn.csv
    python examples/churn/make_data.py OUT.csv --rows 5000 --seed 1
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np

CONTRACTS = ("month-to-month", "one-year", "two-year")
INTERNET = ("fiber", "dsl", "none")
PAYMENTS = ("electronic-check", "bank-transfer", "credit-card", "mailed-check")
REGIONS = ("north", "south", "east", "west")
COLUMNS = ("customer_id", "tenure_months", "monthly_charges", "support_calls", "contract", "internet_service",
           "payment_method", "region", "paperless_billing", "senior_citizen", "churn")


def rows(count: int, seed: int) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        contract = CONTRACTS[rng.choice(3, p=[0.55, 0.25, 0.20])]
        internet = INTERNET[rng.choice(3, p=[0.45, 0.35, 0.20])]
        payment = PAYMENTS[rng.choice(4, p=[0.35, 0.22, 0.23, 0.20])]
        region = REGIONS[rng.integers(4)]
        tenure = int(min(72, rng.exponential(12 if contract == "month-to-month" else 36)))
        charges = 20 + (55 if internet == "fiber" else 30 if internet == "dsl" else 0) + rng.normal(10, 8)
        calls = int(rng.poisson(1.5))
        paperless = rng.random() < (0.7 if payment == "electronic-check" else 0.5)
        senior = rng.random() < 0.16
        # A logistic model of who leaves: short contracts, new customers, fibre bills and complaints.
        logit = (-1.6 + 1.5 * (contract == "month-to-month") - 1.0 * (contract == "two-year") - 0.04 * tenure
                 + 0.02 * (charges - 60) + 0.5 * (internet == "fiber") + 0.6 * (payment == "electronic-check")
                 + 0.35 * calls + 0.3 * senior + 0.2 * paperless)
        churned = rng.random() < 1 / (1 + math.exp(-logit))
        out.append({
            "customer_id": f"C{100000 + i}",
            # Missing values, as real exports have them: empty fields.
            "tenure_months": "" if rng.random() < 0.03 else tenure,
            "monthly_charges": round(max(charges, 18.0), 2),
            "support_calls": calls,
            "contract": contract,
            "internet_service": internet,
            "payment_method": "" if rng.random() < 0.05 else payment,
            "region": region,
            "paperless_billing": "yes" if paperless else "no",
            "senior_citizen": "" if rng.random() < 0.02 else ("true" if senior else "false"),
            "churn": "churned" if churned else "stayed",
        })
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", type=Path, default=Path(__file__).with_name("churn.csv"))
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with args.out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows(args.rows, args.seed))
    print(f"wrote {args.rows} rows to {args.out}")


if __name__ == "__main__":
    main()

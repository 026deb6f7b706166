"""Accuracy of one network as float32, after post-training int8 quantization, and after
quantization-aware fine-tuning, side by side in one run.

A chain-space genotype (benchmarks/genotypes/ or the fixed one below) is retrained from scratch
(tvmnas.train), then calibrated and fine-tuned by tvmnas.training.qat: the accuracy right after
calibration is the PTQ accuracy (same ranges as `tvmnas compile --quantize int8` on those images),
the one after fine-tuning the QAT accuracy; both are of the integer arithmetic the C code runs.
Training resumes from its checkpoints in --work. Writes JSON, prints a table; never passes or fails.

    python benchmarks/qat_vs_ptq.py --dataset cifar10 --data-root ../shared/data/cifar10 \\
        --limit-train 5000 --limit-test 1000 --train-epochs 8 --qat-epochs 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import git_commit  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--limit-train", type=int, default=None)
    parser.add_argument("--limit-test", type=int, default=None)
    parser.add_argument("--train-epochs", type=int, default=20)
    parser.add_argument("--qat-epochs", type=int, default=4)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=HERE / "results" / "qat_vs_ptq")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "qat_vs_ptq.json")
    args = parser.parse_args()

    import torch

    from tvmnas.data import load_dataset
    from tvmnas.search.genotype import ChainLayer, Genotype
    from tvmnas.train import TrainConfig, train
    from tvmnas.training.qat import QATConfig, quantization_aware_train

    torch.set_num_threads(1)
    commit = git_commit()  # the code measured, not what HEAD is when the run ends
    data = load_dataset(args.dataset, root=args.data_root, limit_train=args.limit_train, limit_test=args.limit_test)
    genotype = Genotype(space="chain", input_shape=data.input_shape, num_classes=data.num_classes,
                        channels=args.channels,
                        layers=(ChainLayer("mb_k3_e3", 2 * args.channels, 2), ChainLayer("mb_k3_e3", 2 * args.channels, 1),
                                ChainLayer("mb_k3_e3", 4 * args.channels, 2), ChainLayer("mb_k3_e3", 4 * args.channels, 1)))
    work = args.work / (f"{args.dataset}_n{len(data.train_x)}_t{len(data.test_x)}_c{args.channels}_"
                        f"e{args.train_epochs}_q{args.qat_epochs}_s{args.seed}")
    trained = train(genotype, data, work / "train", TrainConfig(epochs=args.train_epochs, seed=args.seed))
    qat = quantization_aware_train(trained.model, data, work / "qat", QATConfig(epochs=args.qat_epochs, seed=args.seed),
                                   float_accuracy=trained.metrics["test_accuracy"])
    m = qat.metrics
    row = {"dataset": data.name, "train_examples": len(data.train_x), "test_examples": len(data.test_x),
           "genotype": str(genotype), "train_epochs": args.train_epochs, "qat_epochs": args.qat_epochs,
           "seed": args.seed, "float32": m["float_test_accuracy"], "ptq_int8": m["ptq_test_accuracy"],
           "qat_int8": m["test_accuracy"], "commit": commit}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(row, indent=2) + "\n")
    print("| dataset | train / test images | epochs (float + QAT) | float32 | PTQ int8 | QAT int8 |")
    print("|---|---|---|---|---|---|")
    print(f"| {row['dataset']} | {row['train_examples']} / {row['test_examples']} | {args.train_epochs} + "
          f"{args.qat_epochs} | {row['float32']:.2%} | {row['ptq_int8']:.2%} | {row['qat_int8']:.2%} |")


if __name__ == "__main__":
    main()

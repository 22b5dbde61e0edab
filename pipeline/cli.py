"""`reme`: label images, evaluate on benchmarks, report on a reference set.

    reme label --index DIR (--classes "cat,dog,sky" | --classes-file F) INPUT OUTPUT [--overlay] [--runner ...]
    reme evaluate --index DIR --dataset voc21 ROOT [--output DIR | --predictions DIR] [--json OUT]
    reme report --index DIR OUT.html

Flags this program does not know go to Beam (e.g. --runner DataflowRunner --project P --region R
--temp_location gs://b/tmp --setup_file ./setup.py, or --direct_num_workers 2 --direct_running_mode
multi_processing). Every default comes from the typed configs (pipeline.config, inference.labeller.LabelRequest).
A run that cannot start stops before any work with one line on stderr and exit status 2 (pipeline.command).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from inference.datasets import DATASETS, DatasetError, ignore_value_for
from inference.labeller import ClassListError, LabelRequest, parse_class_aliases
from inference.metrics import format_table
from inference.report import write_report
from inference.scoring import STRATEGIES
from models.weights import WeightsUnavailable
from pipeline.command import (
    CommandError,
    OneLineArgumentParser,
    UsageError,
    report,
    run_command,
    weights_error_of,
)
from pipeline.config import LabelJobConfig, ModelChoices, ReadConfig, WorkerConfig, parse_formats
from pipeline.label_job import evaluate_dataset, label
from pipeline.options import add_worker_flags, failure_config, worker_config
from refset import storage
from refset.reader import ReferenceSetError

PROG = "reme"


def add_labelling_flags(p: argparse.ArgumentParser, index_required: bool = True) -> None:
    """The flags of `reme label` and `reme evaluate`; defaults from LabelRequest, LabelJobConfig and its parts."""
    add = p.add_argument
    add("--index", required=index_required, help="reference set directory (local or gs://)")
    add("--strategy", choices=STRATEGIES, default=LabelRequest.strategy, help="how segments score the classes")
    add("--k", type=int, default=LabelRequest.k, help="reference segments retrieved per query segment")
    add("--segments_per_label", type=int, default=LabelRequest.segments_per_label,
        help="per_label: a reference label's evidence is the mean similarity of its m nearest retrieved segments")
    add("--tau", type=float, default=LabelRequest.tau, help="softmax temperature over neighbour similarities")
    add("--threshold", type=float, default=LabelRequest.threshold,
        help="segments whose best score is below this become background (if a class is named 'background') or "
             "unlabelled; reme evaluate: default the benchmark's own on benchmarks with a background class "
             "(voc21, context60, coco-object), 0 turns it off")
    add("--no_fill", action="store_true",
        help="leave pixels no segment covers unlabelled instead of giving them the nearest segment's class")
    add("--overlay", action="store_true", help="also write colour overlays with a legend")
    add("--max_side", type=int, default=ReadConfig.max_side,
        help="working size: images are segmented and embedded with this longest side (0 = full size, unbounded "
             "memory); label maps are written at each input's own size")
    add("--preset", default=None, help="models preset override (default: the index's own)")
    add("--cache_dir", default=None, help="where presets materialise weights")
    add("--masker", choices=("felzenszwalb", "sam"), default=None, help="masker override")
    add("--min_area", type=int, default=None, help="segments smaller than this many pixels are dropped")
    add("--visual_kind", choices=("dinov2", "clip"), default=None)
    add("--visual_model", default=None, help="must be the index's visual encoder (checked)")
    add("--text_kind", choices=("clip", "sentence"), default=None)
    add("--text_model", default=None, help="must be the index's text encoder (checked)")
    add("--device", default=None, help="auto | cpu | cuda")
    add_worker_flags(p, pairing=False)
    add("--label_batch_size", type=int, default=WorkerConfig.label_batch_size, help="images per retrieval batch")
    add("--no_progress", action="store_true")


def get_args_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog=PROG, description="Training-free open-vocabulary segmentation by retrieval (ReME).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineArgumentParser)

    lab = sub.add_parser("label", help="label a folder, glob or gs:// prefix of images with any class names")
    add_labelling_flags(lab)
    add_class_flags(lab, required=True)
    lab.add_argument("--format", default="png",
                     help="what to write, comma-separated: png (the label maps, always written) and coco (also ONE "
                          "COCO JSON of the run, OUTPUT/coco.json: an RLE annotation per image and class, for "
                          "FiftyOne, CVAT, detectron2, mmseg); e.g. --format png,coco")
    lab.add_argument("input", help="directory, glob or gs:// prefix of images")
    lab.add_argument("output", help="output directory (local or gs://)")

    ev = sub.add_parser("evaluate", help="mIoU of the labeller (or of existing label maps) on a benchmark")
    add_labelling_flags(ev, index_required=False)
    ev.add_argument("--dataset", required=True, choices=DATASETS)
    add_class_flags(ev, required=False, evaluate=True)
    ev.add_argument("root", help="dataset root directory")
    ev.add_argument("--predictions", default=None, help="score the label maps in this directory (no model run)")
    ev.add_argument("--output", default=None, help="keep the labeller's maps in this directory (default: a temporary directory, removed "
                         "afterwards; nothing is written in or beside the dataset)")
    ev.add_argument("--ignore_index", type=int, default=None, help="folder datasets: label value that is no class")
    ev.add_argument("--json", dest="json_out", default=None, help="also write the results as JSON here")

    rep = sub.add_parser("report", help="static HTML report on a reference set's quality")
    rep.add_argument("--index", required=True, help="reference set directory (local or gs://)")
    rep.add_argument("out", help="output .html file")
    rep.add_argument("--per_label", type=int, default=4, help="thumbnails per gallery row (most and least typical)")
    rep.add_argument("--max_galleries", type=int, default=100, help="galleries for the largest N labels")
    return parser


def add_class_flags(p: argparse.ArgumentParser, required: bool, evaluate: bool = False) -> None:
    """--classes / --classes-file, with aliases (inference.labeller.parse_class_aliases)."""
    group = p.add_mutually_exclusive_group(required=required)
    also = (" One class per benchmark class, in its id order: these names replace the benchmark's own class file "
            "(default: the standard one, with aliases and the background line).") if evaluate else ""
    group.add_argument("--classes", help='comma-separated class names, e.g. "cat,dog,sky"; with aliases, classes '
                       'separated by ";" and names by ",": "person, man, woman; cat; sky" (a class scores the max '
                       f"over its names).{also}")
    group.add_argument("--classes-file", "--classes_file", dest="classes_file",
                       help="one class per line, aliases after commas (\"person, man, woman\"); the first name is "
                            f"the class's name in the outputs.{also}")


def label_config(args, classes: list[str] | list[tuple[str, ...]], inputs: tuple[str, ...] = (),
                 output: str = "") -> LabelJobConfig:
    """Flags -> the typed labelling configuration (validated); `classes`: names, or each class's names."""
    aliases = tuple((c,) if isinstance(c, str) else tuple(c) for c in classes)
    class_names = [names[0] for names in aliases]
    request = LabelRequest(class_names=tuple(class_names), aliases=aliases, strategy=args.strategy, k=args.k,
                           segments_per_label=args.segments_per_label, tau=args.tau,
                           threshold=args.threshold, ignore_value=ignore_value_for(len(class_names)),
                           fill_uncovered=not args.no_fill)
    choices = ModelChoices(preset=args.preset, cache_dir=args.cache_dir, masker=args.masker, min_area=args.min_area,
                           visual_kind=args.visual_kind, visual_model=args.visual_model, text_kind=args.text_kind,
                           text_model=args.text_model, device=args.device, visual_batch_size=args.visual_batch_size)
    config = LabelJobConfig(index=args.index or "", inputs=inputs, output=output, request=request, models=choices,
                            read=ReadConfig(max_side=args.max_side, max_pixels=args.max_pixels),
                            workers=worker_config(args), failures=failure_config(args), overlay=args.overlay,
                            progress=not args.no_progress)
    return config


def read_class_aliases(args) -> list[tuple[str, ...]] | None:
    """The classes of --classes or --classes-file, each with its names (None when neither is given)."""
    if args.classes is not None:
        return parse_class_aliases(text=args.classes)
    if args.classes_file is None:
        return None
    try:
        text = storage.read_bytes(args.classes_file).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read --classes-file {args.classes_file}: {exc}") from exc
    return parse_class_aliases(lines=text.splitlines())


def cmd_label(args, beam_args: list[str]) -> int:
    config = label_config(args, read_class_aliases(args), (args.input,), args.output)
    config = dataclasses.replace(config, formats=parse_formats(args.format))
    summary = label(config.validate(), beam_args)
    print(f"labelled {summary['labelled']} images, skipped {summary['skipped_done']} already done, "
          f"failed {summary['failed']} -> {summary['output']} ({summary['seconds']} s)")
    if summary.get("coco"):
        coco = summary["coco"]
        print(f"COCO: {coco['path']} ({coco['images']} images, {coco['annotations']} annotations)")
    for row in summary["failures"][:20]:
        print(f"  failed: {row['uri']} [{row['stage']}] {row['error_type']}: {row['message']}")
    if summary["failed"] > 20:
        print(f"  ... {summary['failed'] - 20} more in {summary['output']}/failures.parquet")
    return 0


def cmd_evaluate(args, beam_args: list[str]) -> int:
    if args.index is None and args.predictions is None:
        raise UsageError("give --index DIR (run the labeller) or --predictions DIR (score existing label maps)")
    config, classes = None, None
    if args.predictions is None:
        classes = read_class_aliases(args)
        # The dataset's class list (its standard class file, or --classes) replaces these placeholder names once
        # the dataset is read; so does its background threshold where --threshold is not given.
        config = label_config(args, ["_"], output=args.output or "")
    elif args.classes is not None or args.classes_file is not None:
        raise UsageError("--classes/--classes-file name the classes to label with; --predictions are labelled already")
    result = evaluate_dataset(args.dataset, args.root, config, predictions=args.predictions,
                              ignore_index=args.ignore_index, beam_args=beam_args, show_progress=not args.no_progress,
                              classes=classes)
    if result.get("background"):
        bg = result["background"]
        sys.stderr.write(f"reme evaluate: background {bg['name']!r} predicted from {len(bg['names'])} scored names, "
                         f"threshold {bg['threshold']} ({bg['threshold_from']})\n")
    print(format_table(result, title=f"{args.dataset}: {result['images']} images"))
    if args.json_out:
        storage.write_json(args.json_out, result)
    return 0


def cmd_report(args, beam_args: list[str]) -> int:
    if beam_args:
        raise UsageError(f"unrecognized arguments: {' '.join(beam_args)}")
    out = write_report(args.index, args.out, per_label=args.per_label, max_galleries=args.max_galleries)
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one `reme` command; returns its exit status (a refusal or failure is printed as one line)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args, rest = get_args_parser().parse_known_args(argv)
    handlers = {"label": cmd_label, "evaluate": cmd_evaluate, "report": cmd_report}
    prog = f"{PROG} {args.command}"
    try:
        return handlers[args.command](args, rest)
    except CommandError as exc:
        return report(exc, exc.prog or prog)
    except (ClassListError, ReferenceSetError, DatasetError, WeightsUnavailable, FileNotFoundError) as exc:
        return report(UsageError(str(exc)), prog)
    except Exception as exc:
        if (line := weights_error_of(exc)) is not None:  # a worker's model error, wrapped by Beam
            return report(UsageError(line), prog)
        raise


def console_main() -> None:
    """The `reme` console script: run, then leave without native-thread teardown (see command.run_command)."""
    run_command(main, PROG)


if __name__ == "__main__":
    console_main()

"""Average the weights of garment models trained by one recipe with different seeds (a "model soup").

    python training/soup_embedder.py --runs layers/models/garment_v5.json build/garment_s29 --run-dir build/garment_soup
    python training/train_embedder.py --run-dir build/garment_soup --export layers/models --name NAME

Runs of train_embedder.py's recipe start from the same weights (the ImageNet backbone, and heads
initialised with train_embedder.SEED whatever --seed is) and differ only in the order and
augmentation of their views, so their fine-tuned weights can be averaged into one network: the soup
costs what one model costs to serve, and averaged fine-tuned weights tend to generalise better than
each run's (Wortsman et al., "Model soups", ICML 2022).

An ingredient is a run directory (its `checkpoint.pt`) or an exported model's manifest: a run
directory lives in build/ and is gone in a fresh checkout, while the committed model is not, so its
weights are read back from its .tflite (fp16, batch norms folded; checked against the .tflite's own
outputs on its parity samples). Every ingredient is brought to the folded form (each batch norm
folded into its convolution, then an identity batch norm carrying the bias; classifier rows of unit
length), the form an exported model has, and then every tensor is averaged. The soup is scored as
a run is (test queries against train + validation, `train_embedder.score`) and written as a run
directory (`checkpoint.pt`, `summary.json`) that `train_embedder.py --export` exports. Its training
time is the ingredients' times added up.
"""

from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_backbone, log, package_versions  # noqa: E402
from export_tflite import fold_batchnorms, relative_error, round_weights_to_fp16  # noqa: E402
from train_embedder import SPLITS, GarmentNet, Serving, list_split, parse_args, readable, score  # noqa: E402

from shazzam.images import load_image, to_model_input  # noqa: E402

# what may differ between the ingredients: everything else is the recipe and must match
RUN_ONLY_ARGS = frozenset({"seed", "run_dir", "export", "name", "workers", "threads", "device", "data"})
# reading an exported model back: its outputs against the recovered network's, fp16-rounded as at export
RECOVERY_TOLERANCE = 1e-3
REPO = Path(__file__).resolve().parent.parent


def conv_bn_pairs(net: GarmentNet) -> list[tuple[str, str, nn.BatchNorm2d]]:
    """(conv key, batch-norm key, batch norm) of every convolution in forward order."""
    pairs = [("stem", "bn0", net.bn0)]
    for i, block in enumerate(net.blocks):
        for conv, bn in (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2")):
            if hasattr(block, conv):
                pairs.append((f"blocks.{i}.{conv}", f"blocks.{i}.{bn}", getattr(block, bn)))
    return pairs + [("conv_head", "bn1", net.bn1)]


def folded(state: dict[str, torch.Tensor], net: GarmentNet) -> dict[str, torch.Tensor]:
    """The same network with each batch norm folded into its convolution (the batch norm left as an
    identity that adds the bias: weight 1, mean 0, variance 1 - eps) and unit classifier rows."""
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    for conv, bn, module in conv_bn_pairs(net):
        scale = state[f"{bn}.weight"] / torch.sqrt(state[f"{bn}.running_var"] + module.eps)
        state[f"{conv}.weight"] = state[f"{conv}.weight"] * scale[:, None, None, None]
        state[f"{bn}.bias"] = state[f"{bn}.bias"] - state[f"{bn}.running_mean"] * scale
        state[f"{bn}.weight"] = torch.ones_like(scale)
        state[f"{bn}.running_mean"] = torch.zeros_like(scale)
        state[f"{bn}.running_var"] = torch.full_like(scale, 1 - module.eps)
    state["classifier.weight"] = nn.functional.normalize(state["classifier.weight"], dim=1)
    return state


def from_exported(manifest_path: Path, net: GarmentNet) -> tuple[dict[str, torch.Tensor], dict]:
    """The folded state of an exported garment model, read from its .tflite, and its training facts.
    The frozen blocks are the ImageNet ones (they are by construction); the trained ones, the head
    conv and both linear layers come from the file's convolution and fully-connected operators, in
    forward order. The classifier's scale was multiplied into its weight at export: its rows' norm."""
    from ai_edge_litert.interpreter import Interpreter

    manifest = json.loads(manifest_path.read_text())
    tflite_path = manifest_path.parent / manifest["file"]
    if hashlib.sha256(tflite_path.read_bytes()).hexdigest() != manifest["sha256"]:
        raise SystemExit(f"{tflite_path} does not match the checksum in {manifest_path}")
    interpreter = Interpreter(model_path=str(tflite_path))
    interpreter.allocate_tensors()
    ops = interpreter._get_ops_details()  # the operator graph: the interpreter's only view of which constant feeds which op
    source = {op["outputs"][0]: op["inputs"][0] for op in ops if op["op_name"] == "DEQUANTIZE"}  # fp16 constants

    def constant(index: int) -> torch.Tensor:
        return torch.from_numpy(interpreter.get_tensor(source.get(index, index)).astype(np.float32))

    convs = [op for op in ops if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    linears = [op for op in ops if op["op_name"] == "FULLY_CONNECTED"]
    pairs = conv_bn_pairs(net)
    if len(convs) != len(pairs) or len(linears) != 2:
        raise SystemExit(f"{tflite_path} is not a {len(pairs)}-convolution GarmentNet")
    state = folded(net.state_dict(), net)

    def trained(conv: str) -> bool:
        return conv == "conv_head" or (conv.startswith("blocks.") and int(conv.split(".")[1]) >= net.frozen_blocks)

    for op, (conv, bn, _) in zip(convs, pairs):
        if not trained(conv):
            continue
        weight, bias = constant(op["inputs"][1]), constant(op["inputs"][2])
        # TFLite: CONV_2D [out, h, w, in], DEPTHWISE_CONV_2D [1, h, w, channels]; PyTorch [out, in, h, w]
        weight = weight.permute(3, 0, 1, 2) if op["op_name"] == "DEPTHWISE_CONV_2D" else weight.permute(0, 3, 1, 2)
        if weight.shape != state[f"{conv}.weight"].shape:
            raise SystemExit(f"{tflite_path}: {conv} is {tuple(weight.shape)}, not {tuple(state[f'{conv}.weight'].shape)}")
        state[f"{conv}.weight"], state[f"{bn}.bias"] = weight, bias
    (project, classifier) = linears
    state["project.weight"], state["project.bias"] = constant(project["inputs"][1]), constant(project["inputs"][2])
    scaled, state["classifier.bias"] = constant(classifier["inputs"][1]), constant(classifier["inputs"][2])
    norms = scaled.norm(dim=1)
    state["scale"] = norms.mean()
    state["classifier.weight"] = scaled / norms[:, None]
    check_recovered(state, net, manifest, manifest_path)
    return state, manifest["training"]


def check_recovered(state: dict, net: GarmentNet, manifest: dict, manifest_path: Path) -> None:
    """The recovered network, rounded to fp16 as at export, against the parity file's outputs."""
    net = copy.deepcopy(net)
    net.load_state_dict(state)
    reference = round_weights_to_fp16(fold_batchnorms(net)).eval()
    parity = np.load(manifest_path.parent / manifest["parity"]["file"])
    inputs = [to_model_input(load_image((REPO / str(p)).read_bytes())) for p in parity["samples"]]
    with torch.inference_mode():
        outputs = [reference(torch.from_numpy(x)) for x in inputs]
    embeddings = np.concatenate([o[0].numpy() for o in outputs])
    probabilities = np.concatenate([torch.softmax(o[2], dim=1).numpy() for o in outputs])
    error = max(relative_error(embeddings, parity["embedding"]), relative_error(probabilities, parity["probabilities"]))
    log(f"{manifest_path.stem}: weights read back from its .tflite; relative error of its outputs {error:.1e}")
    if error >= RECOVERY_TOLERANCE:
        raise SystemExit(f"{manifest_path}: the weights read back do not reproduce the model (relative error {error:.1e})")


@functools.cache
def network(dim: int, frozen_blocks: int) -> GarmentNet:
    """One ImageNet-initialised network per shape, loaded once: folding and reading back only read
    it (check_recovered works on a copy); main loads the soup into it last."""
    return GarmentNet(load_backbone(), dim, frozen_blocks)


def ingredient(path: Path) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """(folded state, training summary, shape) of a run directory or an exported model's manifest."""
    if path.suffix == ".json":
        manifest = json.loads(path.read_text())
        shape = {"dim": manifest["outputs"]["embedding"]["dim"], "frozen_blocks": manifest["training"]["args"]["frozen_blocks"]}
        state, summary = from_exported(path, network(**shape))
        return state, summary, shape
    checkpoint = torch.load(path / "checkpoint.pt", map_location="cpu", weights_only=False)
    shape = {"dim": checkpoint["dim"], "frozen_blocks": checkpoint["frozen_blocks"]}
    return folded(checkpoint["state"], network(**shape)), checkpoint["summary"], shape


def recipe(summary: dict) -> dict:
    """The arguments that make the recipe; ones an older run did not record take today's defaults."""
    return {k: v for k, v in {**vars(parse_args([])), **summary["args"]}.items() if k not in RUN_ONLY_ARGS}


def soup(paths: list[Path]) -> tuple[dict[str, torch.Tensor], dict, list[dict]]:
    """The averaged folded state of these ingredients, their network's shape and their summaries."""
    if len(paths) < 2:
        raise SystemExit("a soup needs at least two runs")
    ingredients = [ingredient(p) for p in paths]
    states, summaries, shapes = zip(*ingredients)
    for path, summary in zip(paths, summaries):
        if isinstance(summary["args"]["seed"], list):  # a soup records the seeds of its ingredients
            raise SystemExit(f"{path} is itself a soup (seeds {summary['args']['seed']}): "
                             f"give the runs it was made of instead")
    for path, summary in zip(paths[1:], summaries[1:]):
        first, this = recipe(summaries[0]), recipe(summary)
        differing = sorted(k for k in first.keys() | this.keys() if first.get(k) != this.get(k))
        if differing:
            raise SystemExit(f"{path} is not a run of {paths[0]}'s recipe: {', '.join(differing)} differ")
    seeds = [s["args"]["seed"] for s in summaries]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"the runs repeat a seed ({seeds}): nothing to average")
    average = {key: torch.stack([state[key] for state in states]).mean(0) if tensor.is_floating_point() else tensor
               for key, tensor in states[0].items()}
    return average, shapes[0], list(summaries)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", type=Path, required=True,
                        help="run directories of train_embedder.py, or exported models' manifests (.json)")
    parser.add_argument("--run-dir", type=Path, required=True, help="where the soup's checkpoint.pt goes")
    parser.add_argument("--data", default="../shared/data/clothing-dataset-small", help="for the test figures")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    state, shape, summaries = soup(args.runs)
    model = network(**shape)
    model.load_state_dict(state)
    data = Path(args.data)
    items = {s: readable(list_split(data, s), s) for s in SPLITS}
    loaders = {s: torch.utils.data.DataLoader(Serving(items[s]), batch_size=128, num_workers=args.workers) for s in SPLITS}
    started = time.perf_counter()
    test = score(model, loaders, torch.device("cpu"), "test", ("train", "validation"))
    seeds = [s["args"]["seed"] for s in summaries]
    log(f"soup of {len(summaries)} runs (seeds {seeds}): test {test}; scored in {time.perf_counter() - started:.0f} s")
    # the first ingredient's facts (epochs, images, device) are every one's: the recipe is checked to be one
    shared = {k: v for k, v in summaries[0].items() if k not in ("history", "test", "seconds", "args")}
    summary = {**shared, "test": test, "seconds": sum(s["seconds"] for s in summaries), "torch": torch.__version__,
               "packages": package_versions(), "args": {**summaries[0]["args"], "seed": seeds},
               "soup": [{"from": str(p), "seed": s["args"]["seed"], "seconds": s["seconds"], "test": s["test"]}
                        for p, s in zip(args.runs, summaries)]}
    args.run_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"state": state, **shape, "summary": summary}, args.run_dir / "checkpoint.pt")
    (args.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    log(f"wrote {args.run_dir / 'checkpoint.pt'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

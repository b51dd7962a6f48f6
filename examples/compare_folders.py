"""Compare two image folders with Visual DNA.

    python examples/compare_folders.py FOLDER_A FOLDER_B [--extractor rand_resnet50] [--num-images 100]
    python examples/compare_folders.py            # no folders: two small procedural sets, offline

Each folder becomes a DNA (one histogram per neuron); the EMD between them is printed overall and per
layer. With a pretrained extractor (e.g. --extractor dino_resnet50 --weights CHECKPOINT) the numbers
reflect what a trained network sees; rand_resnet50 (fixed random weights) works offline.
"""
import argparse
import tempfile

from vdna import EMD, VDNAProcessor


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", help="two image folders (none: generated examples)")
    parser.add_argument("--extractor", default="rand_resnet50")
    parser.add_argument("--weights", default=None, help="checkpoint for a pretrained extractor")
    parser.add_argument("--num-images", type=int, default=-1, help="images per folder (default: all)")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    if len(args.folders) not in (0, 2):
        parser.error("give two folders, or none for the generated example")

    with tempfile.TemporaryDirectory() as tmp:
        folders = args.folders
        if not folders:
            from _data import demo_folders

            folders = demo_folders(tmp, n=6)
        processor = VDNAProcessor()
        dnas = [processor.make_vdna(f, num_images=args.num_images, feat_extractor_name=args.extractor,
                                    distribution_name="histogram-1000", device=args.device, extractor_weights=args.weights,
                                    num_workers=2, batch_size=16, verbose=False)
                for f in folders]

    a, b = dnas
    print(f"EMD between {folders[0]} and {folders[1]}: {float(EMD(a, b)):.4f} bins (mean over "
          f"{sum(a.neurons_list.values())} neurons; 0 = identical)")
    for layer in a.neurons_list:
        print(f"  {layer:<10} {float(EMD(a, b, use_neurons_from_layer=layer)):8.4f}")


if __name__ == "__main__":
    main()

"""FID between two image folders with the `inception` extractor and local weights.

    python examples/fid_inception.py WEIGHTS FOLDER_A FOLDER_B

FID = the FID Inception network (`inception`), one Gaussian per layer (`layer-gaussian`), and the
Frechet distance on its pool3 features (`block_3`, 2048 neurons). WEIGHTS is pytorch-fid's
checkpoint `pt_inception-2015-12-05-6726825d.pth`, from
https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
(download it once; vdna never downloads unless allowed). The same DNAs also give the distance per layer.
Use at least a few thousand images per folder for a meaningful FID (the covariance is 2048x2048).
"""
import argparse
import os
import sys

from vdna import FD, VDNAProcessor


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", help="path to pt_inception-2015-12-05-6726825d.pth")
    parser.add_argument("folder_a")
    parser.add_argument("folder_b")
    parser.add_argument("--device", default=None)
    parser.add_argument("--batch-size", type=int, default=50)
    args = parser.parse_args(argv)
    if not os.path.isfile(args.weights):
        sys.exit(f"weights not found: {args.weights}; download pt_inception-2015-12-05-6726825d.pth from "
                 "https://github.com/mseitzer/pytorch-fid/releases (see this file's docstring)")

    processor = VDNAProcessor()
    dnas = [processor.make_vdna(folder, feat_extractor_name="inception", distribution_name="layer-gaussian",
                                extractor_weights=args.weights, device=args.device, batch_size=args.batch_size)
            for folder in (args.folder_a, args.folder_b)]
    print(f"FID: {float(FD(*dnas, use_neurons_from_layer='block_3')):.3f}")
    for layer in dnas[0].neurons_list:
        print(f"  FD on {layer:<8} {float(FD(*dnas, use_neurons_from_layer=layer)):12.3f}")


if __name__ == "__main__":
    main()

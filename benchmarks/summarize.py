"""Turn a pytest-benchmark JSON file into a Markdown table (median times and extra_info) for RESULTS.md."""
import json
import sys


def main(path):
    data = json.load(open(path))
    print(f"Machine: {data['machine_info'].get('cpu', {}).get('brand_raw', '?')}; {data['datetime']}\n")
    print("| benchmark | median (ms) | details |")
    print("|---|---:|---|")
    for bench in data["benchmarks"]:
        extra = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in bench["extra_info"].items())
        print(f"| {bench['fullname'].split('::')[-1]} | {bench['stats']['median'] * 1e3:.3f} | {extra} |")


if __name__ == "__main__":
    main(sys.argv[1])

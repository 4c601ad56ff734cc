"""FastChat's side of the end-to-end benchmark (issue 14): what `moat leaderboard --battles FILE
--style-control --rounds N` computes, done with FastChat's leaderboard code, on the same Arena JSON
Lines file (with `conv_metadata`) that `bench_bt --end-to-end` reads, timed from reading the file to
the finished tables, with peak memory.

Usage:
    python fastchat_end_to_end.py BATTLES.jsonl [--rounds 100] [--style-rounds N]
        [--moat MOAT.json] [--out RESULTS.json] [--min-available-gb 3] [--max-gb 14]
        [--compact-read]

FastChat's code is not part of this repository: `rating_systems.py` and `elo_analysis.py` from
lm-sys/FastChat's fastchat/serve/monitor/ must be in one folder on PYTHONPATH (stats/bench/run.sh
sets it from FASTCHAT_RATING_SYSTEMS). `elo_analysis.py` is loaded with its plotting and log-reading
imports stubbed (plotly, pytz, the model registry, the log cleaner), because only its pandas code
runs here; FastChat's package itself imports torch.

The steps follow `report_elo_analysis_results` in elo_analysis.py (rating_system="bt"), once without
and once with style control, as Arena's leaderboard is made:

  read        pd.read_json(lines=True): the DataFrame with conv_metadata as Python dicts
  filter      the exclude_models filter and the no-ties frame (both apply; the model list is empty)
  elo         compute_elo: online Elo, a Python loop over the battles (Moat computes it too)
  bt          compute_bootstrap_bt (ROUNDS rounds, multiprocessing.Pool) and compute_bt
  style       compute_bootstrap_style_control (STYLE_ROUNDS rounds, Pool) and compute_style_control
  tables      CI ranks, the leaderboard table (variance, bounds, battle counts) for both fits, and
              compute_pairwise_win_fraction (the win matrix)

Left out, because they do not apply to these battles or Moat does not do them here: the row filter
`battles.progress_apply(filter_func, axis=1)` (the identity for the "full" category, but a Python
call per row), sorting by `tstamp` and keeping `anony` battles (the synthetic file has neither
column), language and per-user limits, outlier detection (off by default), and the plotly figures.
--compact-read is not FastChat's pipeline but a reader of ours in front of its code, for files whose
DataFrame does not fit in memory (about 4 KB a battle with conv_metadata as dicts, so ~40 GB at 10M):
json.loads line by line (model names interned), the eight style counts of each line summed into numpy columns,
and conv_metadata replaced by a small view object per row that answers `x[feature]` with the count
(preprocess_for_style takes an int as it is). FastChat's functions then run unchanged.

Style control's intervals are FastChat's bootstrap: its code has no other way to give them (Moat's
come from one fit's sandwich covariance). np.random.seed(42) as elo_analysis.py's main does.

Memory: ru_maxrss of this process and of its largest child (getrusage), and the largest sum of
proportional set sizes (Pss, /proc/PID/smaps_rollup) of this process and its children sampled every
0.25 s: forked pool workers share pages with the parent, so adding the two ru_maxrss figures would
count them twice. A watchdog stops the run (exit 3, JSON with "aborted") if MemAvailable falls below
--min-available-gb or the sampled sum passes --max-gb, so that a shared machine is never driven out
of memory.

Prints one JSON object (timings, memory, and with --moat the ratios and rating differences);
--out also writes FastChat's ratings and bounds.
"""
import argparse
import json
import os
import resource
import signal
import sys
import threading
import time
import types

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import rating_systems  # noqa: E402  fastchat/serve/monitor/rating_systems.py


def load_elo_analysis():
    """Imports FastChat's elo_analysis.py with the modules its pandas code does not use stubbed."""
    stubs = {
        "plotly": {},
        "plotly.express": {},
        "pytz": {"timezone": lambda name: None},
        "fastchat": {},
        "fastchat.model": {},
        "fastchat.model.model_registry": {"get_model_info": lambda name: None},
        "fastchat.serve": {},
        "fastchat.serve.monitor": {},
        "fastchat.serve.monitor.basic_stats": {"get_log_files": None},
        "fastchat.serve.monitor.clean_battle_data": {"clean_battle_data": None},
    }
    for name, attributes in stubs.items():
        module = sys.modules.setdefault(name, types.ModuleType(name))
        for key, value in attributes.items():
            setattr(module, key, value)
    sys.modules["fastchat.serve.monitor.rating_systems"] = rating_systems
    import elo_analysis

    return elo_analysis


class Memory:
    """Samples Pss of this process and its children; aborts the run when memory runs short."""

    def __init__(self, min_available_bytes, max_bytes, interval=0.25):
        self.min_available = min_available_bytes
        self.max_bytes = max_bytes
        self.start = time.perf_counter()
        self.interval = interval
        self.stage = "start"
        self.peak_total = 0
        self.peak_stage = "start"
        self.peak_by_stage = {}
        self.seconds = {}
        Memory.guard = self.start_guard()
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()

    def start_guard(self):
        """A forked process that kills this one and its workers when memory runs short: a thread
        cannot, since pd.read_json holds the GIL for minutes while it parses."""
        parent = os.getpid()
        pid = os.fork()
        if pid:
            return pid
        Memory.guard = os.getpid()
        start = time.perf_counter()
        while os.getppid() == parent:
            children = self.children(parent)
            total = self.pss(parent) + sum(self.pss(c) for c in children)
            available = self.available()
            if available < self.min_available or total > self.max_bytes:
                for victim in children + [parent]:
                    try:
                        os.kill(victim, signal.SIGKILL)
                    except OSError:
                        pass
                print(
                    json.dumps(
                        {
                            "aborted": f"MemAvailable {available / 1e9:.1f} GB (limit "
                            f"{self.min_available / 1e9:.1f}), Pss {total / 1e9:.1f} GB (limit "
                            f"{self.max_bytes / 1e9:.1f})",
                            "seconds_since_start": round(time.perf_counter() - start, 1),
                        }
                    ),
                    flush=True,
                )
                os._exit(3)
            time.sleep(self.interval)
        os._exit(0)

    def stop_guard(self):
        os.kill(Memory.guard, signal.SIGKILL)
        os.waitpid(Memory.guard, 0)

    guard = None

    @staticmethod
    def children(pid="self"):
        pids = []
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    pids.extend(int(p) for p in f.read().split())
            except OSError:
                pass
        return [p for p in pids if p != Memory.guard]

    @staticmethod
    def pss(pid):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    @staticmethod
    def available():
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        return 0

    def sample(self):
        total = self.pss("self") + sum(self.pss(pid) for pid in self.children())
        if total > self.peak_total:
            self.peak_total, self.peak_stage = total, self.stage
        self.peak_by_stage[self.stage] = max(self.peak_by_stage.get(self.stage, 0), total)

    def run(self):
        while True:
            self.sample()
            time.sleep(self.interval)

    def enter(self, stage):
        self.sample()
        self.stage = stage


class MetadataView:
    """One battle's conv_metadata as preprocess_for_style reads it (`x[feature]`, an int), backed
    by shared numpy columns instead of a dict of dicts per battle."""

    __slots__ = ("columns", "row")

    def __init__(self, columns, row):
        self.columns, self.row = columns, row

    def __getitem__(self, key):
        return int(self.columns[key][self.row])


def compact_read(path):
    """Line by line with json.loads: model names interned, the style counts summed into numpy
    columns, and each row's conv_metadata a MetadataView of them. (A first version used
    pd.read_json in chunks of 200,000 lines; with pandas 3.1 its memory kept growing, past 19 GB
    before the end of a 10M file.)"""
    import json
    from array import array

    elements = rating_systems.STYLE_CONTROL_ELEMENTS_V1

    def count(value):
        return value if isinstance(value, int) else sum(value.values())

    names = {}
    model_a, model_b, winner = [], [], []
    columns = {key: array("q") for key in elements}
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            if not line.strip():
                continue
            row = json.loads(line)
            model_a.append(names.setdefault(row["model_a"], row["model_a"]))
            model_b.append(names.setdefault(row["model_b"], row["model_b"]))
            winner.append(names.setdefault(row["winner"], row["winner"]))
            metadata = row["conv_metadata"]
            for key in elements:
                columns[key].append(count(metadata[key]))
    battles = pd.DataFrame({"model_a": model_a, "model_b": model_b, "winner": winner})
    del model_a, model_b, winner
    store = {key: np.frombuffer(column, dtype=np.int64) for key, column in columns.items()}
    battles["conv_metadata"] = [MetadataView(store, row) for row in range(len(battles))]
    return battles


def maxrss(who):
    return resource.getrusage(who).ru_maxrss * 1024  # Linux reports KiB


def ci_ranking(model_order, q025, q975):
    """elo_analysis.report_elo_analysis_results' ranks: 1 + models whose lower bound is above."""
    ranking = {}
    for i, model_a in enumerate(model_order):
        ranking[model_a] = 1
        for j, model_b in enumerate(model_order):
            if i != j and q025[model_b] > q975[model_a]:
                ranking[model_a] += 1
    return ranking


def leaderboard_table(battles, final, bootstrap_df):
    """The leaderboard_table_df of report_elo_analysis_results."""
    q025, q975 = bootstrap_df.quantile(0.025), bootstrap_df.quantile(0.975)
    ranking = ci_ranking(list(final.keys()), q025, q975)
    return pd.DataFrame(
        {
            "rating": final,
            "variance": bootstrap_df.var(),
            "rating_q975": q975,
            "rating_q025": q025,
            "num_battles": battles["model_a"]
            .value_counts()
            .add(battles["model_b"].value_counts(), fill_value=0),
            "final_ranking": pd.Series(ranking),
        }
    )


def centred(ratings):
    """Ratings shifted to mean 1000, as Moat reports them without an anchor."""
    mean = sum(ratings.values()) / len(ratings)
    return {m: r - mean + 1000.0 for m, r in ratings.items()}


def largest_difference(ours, theirs):
    ours, theirs = centred(ours), centred(theirs)
    model, gap = max(((m, abs(ours[m] - theirs[m])) for m in ours), key=lambda x: x[1])
    return {"points": gap, "model": model}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("battles")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--style-rounds", type=int, default=None, help="default: --rounds")
    parser.add_argument("--moat", help="bench_bt --end-to-end --json output, to compare with")
    parser.add_argument("--out", help="write ratings and bounds here")
    parser.add_argument("--min-available-gb", type=float, default=3.0)
    parser.add_argument("--max-gb", type=float, default=14.0)
    parser.add_argument("--compact-read", action="store_true", help="our chunked reader, see above")
    arguments = parser.parse_args()
    style_rounds = arguments.rounds if arguments.style_rounds is None else arguments.style_rounds

    elo_analysis = load_elo_analysis()
    memory = Memory(arguments.min_available_gb * 1e9, arguments.max_gb * 1e9)
    seconds = memory.seconds
    np.random.seed(42)
    start = time.perf_counter()
    last = start

    def lap(stage):
        nonlocal last
        now = time.perf_counter()
        seconds[memory.stage] = now - last
        print(f"{memory.stage}: {now - last:.2f} s", file=sys.stderr, flush=True)
        last = now
        memory.enter(stage)

    memory.enter("read")
    if arguments.compact_read:
        battles = compact_read(arguments.battles)
    else:
        battles = pd.read_json(arguments.battles, lines=True)
    lap("filter")
    exclude_models = []
    battles = battles[
        ~(battles["model_a"].isin(exclude_models) | battles["model_b"].isin(exclude_models))
    ].reset_index(drop=True)
    battles_no_ties = battles[~battles["winner"].str.contains("tie")]
    lap("elo")
    elo_online = rating_systems.compute_elo(battles)
    lap("bt_bootstrap")
    bt_bootstrap = rating_systems.compute_bootstrap_bt(battles, num_round=arguments.rounds)
    lap("bt")
    bt_final = rating_systems.compute_bt(battles)
    lap("style_bootstrap")
    if style_rounds > 0:
        style_bootstrap, style_bootstrap_coef = rating_systems.compute_bootstrap_style_control(
            battles, num_round=style_rounds
        )
    lap("style")
    style_final, style_coef = rating_systems.compute_style_control(battles)
    lap("tables")
    bt_table = leaderboard_table(battles, bt_final, bt_bootstrap)
    if style_rounds > 0:
        style_table = leaderboard_table(battles, style_final, style_bootstrap)
    model_order = sorted(bt_final.keys(), key=lambda m: -bt_final[m])[:25]
    win_fraction = elo_analysis.compute_pairwise_win_fraction(battles_no_ties, model_order)
    lap("done")
    total = time.perf_counter() - start
    memory.stop_guard()
    peak_self = maxrss(resource.RUSAGE_SELF)
    peak_children = maxrss(resource.RUSAGE_CHILDREN)

    result = {
        "battles": len(battles),
        "models": len(bt_final),
        "rounds": arguments.rounds,
        "style_rounds": style_rounds,
        "reader": "compact (ours, line by line)" if arguments.compact_read else "pd.read_json(lines=True)",
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "seconds_total": round(total, 3),
        "seconds_per_style_round": round(seconds["style_bootstrap"] / style_rounds, 3)
        if style_rounds
        else None,
        "memory_gb": {
            "ru_maxrss_self": round(peak_self / 1e9, 3),
            "ru_maxrss_children_largest": round(peak_children / 1e9, 3),
            "pss_self_plus_children_sampled_peak": round(memory.peak_total / 1e9, 3),
            "pss_peak_stage": memory.peak_stage,
            "pss_peak_by_stage": {k: round(v / 1e9, 3) for k, v in memory.peak_by_stage.items()},
        },
        "cpus": os.cpu_count(),
        "load_average": open("/proc/loadavg").read().split()[:3],
        "versions": {"numpy": np.__version__, "pandas": pd.__version__, "python": sys.version.split()[0]},
    }
    # The figure compared with Moat's VmHWM: the larger of the parent's own peak and the sampled
    # peak of parent and workers together.
    peak = max(peak_self, memory.peak_total)
    result["memory_gb"]["peak_for_ratio"] = round(peak / 1e9, 3)
    assert len(win_fraction) == len(model_order) and len(bt_table) == len(bt_final)
    assert len(elo_online) == len(bt_final)

    ratings = {
        "rating": {m: float(r) for m, r in bt_final.items()},
        "lower": {m: float(v) for m, v in bt_bootstrap.quantile(0.025).items()},
        "upper": {m: float(v) for m, v in bt_bootstrap.quantile(0.975).items()},
        "style_rating": {m: float(r) for m, r in style_final.items()},
        "style_coefficients": [float(c) for c in style_coef],
    }
    if style_rounds > 0:
        ratings["style_lower"] = {m: float(v) for m, v in style_bootstrap.quantile(0.025).items()}
        ratings["style_upper"] = {m: float(v) for m, v in style_bootstrap.quantile(0.975).items()}
        del style_table, style_bootstrap_coef

    if arguments.moat:
        with open(arguments.moat) as f:
            moat = json.load(f)
        result["moat"] = {
            "seconds_total": moat["seconds_total"],
            "peak_memory_gb": round(moat["peak_memory_bytes"] / 1e9, 3),
        }
        result["speedup_end_to_end"] = round(total / moat["seconds_total"], 2)
        result["memory_ratio_moat_over_fastchat"] = round(moat["peak_memory_bytes"] / peak, 4)
        result["largest_rating_difference_after_centring"] = {
            "bt": largest_difference(moat["rating"], ratings["rating"]),
            "style_control": largest_difference(moat["style_rating"], ratings["style_rating"]),
        }
    if arguments.out:
        with open(arguments.out, "w") as f:
            json.dump({**result, **ratings}, f)
    print(json.dumps(result, indent=1))
    if arguments.moat:
        print(
            f"end to end, {len(battles)} battles: FastChat {total:.2f} s / Moat "
            f"{moat['seconds_total']:.2f} s = {result['speedup_end_to_end']:.1f}x; peak memory "
            f"Moat {moat['peak_memory_bytes'] / 1e9:.2f} GB / FastChat {peak / 1e9:.2f} GB = 1/"
            f"{peak / moat['peak_memory_bytes']:.1f}; largest rating difference (centred) "
            f"{result['largest_rating_difference_after_centring']['bt']['points']:.3f} points, "
            f"style-controlled "
            f"{result['largest_rating_difference_after_centring']['style_control']['points']:.3f}"
        )


if __name__ == "__main__":
    main()

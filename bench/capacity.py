"""Capacity and unit cost on DigitalOcean Kubernetes at 10k, 100k and 1M users, from measured figures.

Inputs, each named where it came from:
  - the benchmarks' last JSON lines, recorded in bench/results/*.json by bench/record.py (the command,
    the date and the machine are kept with each): the voice bridge's CPU and memory per call, an
    awake agent's memory, wake times and state size, and one user-day played on the platform
    (Temporal actions and events, database rows and writes, CPU by process);
  - list prices in bench/prices.toml (dated; Twilio and Deepgram kept apart from the platform);
  - assumptions for what this machine cannot measure, each with its source (ASSUMPTIONS below).
The usage profile (PROFILE): per user-day 2 calls of 3 minutes, 6 texts in and 6 out, 1 reminder;
15% of a day's activity in the peak hour; an agent awake during activity and 10 minutes after.

Printed per scale: nodes by pool, the Temporal cluster (history shards, frontend/history/matching
replicas), the PostgreSQL plans, the platform's monthly cost and per user, what Twilio and Deepgram
add per user, and the first limit met with what changes there. The last line is one JSON object:
{"users", "cost_per_user_month", "cost_per_user_month_1m", "first_limit", "inputs"}.
"""

from __future__ import annotations

import argparse
import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCALES = (10_000, 100_000, 1_000_000)
PROFILE = {"calls_per_day": 2, "call_minutes": 3.0, "texts_in_per_day": 6, "texts_out_per_day": 6,
           "reminders_per_day": 1, "peak_hour_share": 0.15, "awake_after_min": 10.0}
HOURS_PER_MONTH = 672  # DigitalOcean bills a node at most 28 days a month
DAYS_PER_MONTH = 30

ASSUMPTIONS: dict[str, dict[str, Any]] = {
    "text_moment_min": {"value": 1.0, "source": "a texting moment (a text or two and their answers) keeps the "
                                                "agent busy about a minute before its 10 minutes awake after"},
    "max_pods_per_node": {"value": 110, "source": "kubelet's default maxPods, which DOKS keeps "
                                                  "(kubernetes.io/docs/setup/best-practices/cluster-large)"},
    "system_pods_per_node": {"value": 6, "source": "DaemonSets on every DOKS node (cilium, csi, konnectivity, "
                                                   "kube-proxy replacement, node exporter, log shipper)"},
    "max_nodes_per_cluster": {"value": 5000, "source": "Kubernetes' tested limit, kubernetes.io/docs/setup/"
                                                       "best-practices/cluster-large (DOKS publishes none lower)"},
    "max_pods_per_cluster": {"value": 150_000, "source": "Kubernetes' tested limit, same page"},
    "allocatable_memory_share": {"value": 0.88, "source": "what DOKS leaves pods of a large node after the "
                                                          "kubelet's and system reservations; check with "
                                                          "kubectl describe node"},
    "agent_memory_headroom": {"value": 1.15, "source": "a pod's memory request over the measured resident "
                                                       "memory (the agent grows with its sessions)"},
    "autoscale_headroom": {"value": 1.1, "source": "nodes above the hour's need: the cluster autoscaler adds "
                                                   "nodes in minutes"},
    "spare_replace_s": {"value": 15.0, "source": "a claimed spare's replacement: pod start (~2 s on a node with "
                                                 "the image) and OpenClaw's cold boot to warm (10-12 s, "
                                                 "docs/platform-facts.md)"},
    "cpu_target_utilisation": {"value": 0.6, "source": "cores kept free for bursts within the hour (HPA target)"},
    "temporal_events_per_shard_s": {"value": 50, "source": "sustained history events per second one history "
                                                           "shard takes on PostgreSQL; Temporal's guidance is to "
                                                           "measure (omes) — named, not measured here"},
    "temporal_events_per_history_pod_s": {"value": 1000, "source": "a 2-vCPU history pod; to measure with omes"},
    "temporal_requests_per_frontend_pod_s": {"value": 2000, "source": "a 2-vCPU frontend pod; to measure"},
    "temporal_tasks_per_matching_pod_s": {"value": 2000, "source": "a 2-vCPU matching pod; to measure"},
    "temporal_pod_vcpu": {"value": 2, "source": "the Helm values' requests for each Temporal service pod"},
    "temporal_db_writes_per_event": {"value": 2.0, "source": "a history node row and the execution's mutable "
                                                             "state, per event (Temporal's SQL schema)"},
    "temporal_retention_days": {"value": 30, "source": "deploy/temporal/setup-job.yaml (namespace --retention 30d)"},
    "db_writes_per_vcpu_s": {"value": 1000, "source": "small indexed writes a managed PostgreSQL vCPU sustains "
                                                      "at half load; measure with pgbench on the plan"},
    "db_hot_days": {"value": 1, "source": "a day's new rows (what the day's webhooks, turns and dashboards read "
                                          "back) are kept in the database's memory"},
    "platform_db_retention_months": {"value": 12, "source": "core/settings.py retain_texts_days and "
                                                            "retain_call_transcripts_days (365)"},
    "state_versions_kept": {"value": 2, "source": "Spaces versioning keeps the previous state object"},
    "ingress_load_balancers": {"value": 2, "source": "deploy/kubernetes: the webhook/dashboard and Media "
                                                     "Streams hosts behind one load balancer each"},
}


@dataclass(frozen=True)
class Input:
    value: float
    source: str


class Inputs:
    """Every figure the model uses, with where it came from (kept for the JSON line)."""

    def __init__(self, results: Path, prices: Path) -> None:
        self.results, self.prices = results, tomllib.loads(prices.read_text())
        self.used: dict[str, Input] = {}

    def bench(self, name: str, key: str, file: str) -> float:
        path = self.results / file
        recorded = json.loads(path.read_text())
        value: Any = recorded["line"]
        for step in key.split(".", 1):  # a figure inside a group: "cpu_s_per_user_day.worker"
            value = value[step]
        shown = path.relative_to(HERE.parent) if path.is_relative_to(HERE.parent) else path
        self.used[name] = Input(float(value), f"{shown}: {key} "
                                              f"({recorded['command']}, {recorded['date']})")
        return float(value)

    def assumption(self, name: str) -> float:
        self.used[name] = Input(float(ASSUMPTIONS[name]["value"]), "assumption: " + ASSUMPTIONS[name]["source"])
        return self.used[name].value

    def price(self, *path: str) -> float:
        entry: Any = self.prices
        for step in path:
            entry = entry[step]
        value = entry["usd"] if isinstance(entry, dict) else entry
        self.used[".".join(path)] = Input(float(value), f"bench/prices.toml {'.'.join(path)} "
                                                         f"(as of {self.prices['as_of']})")
        return float(value)

    def profile(self, name: str) -> float:
        self.used[name] = Input(float(PROFILE[name]), "usage profile (issue #20)")
        return float(PROFILE[name])


@dataclass
class Pool:
    name: str
    droplet: str
    nodes_peak: int
    node_hours: float  # per month
    usd: float


def droplet_fit(inputs: Inputs, family: str, need_gb: float, need_vcpu: float) -> tuple[str, int, float]:
    """The node size of `family` with the lowest price per pod of (need_gb, need_vcpu), the larger on
    a tie (fewer nodes for the same money: fewer DaemonSet pods, further from a cluster's node limit):
    its slug, how many such pods it takes (memory, CPU and pods per node all counted), and the share of
    the pods-per-node limit its memory and CPU alone would fill."""
    pods_cap = inputs.assumption("max_pods_per_node") - inputs.assumption("system_pods_per_node")
    share = inputs.assumption("allocatable_memory_share")
    best: tuple[float, int, str, float] | None = None  # (price per pod, -pods per node, slug, share)
    for slug, size in inputs.prices["digitalocean"]["droplets"].items():
        if not isinstance(size, dict) or not slug.startswith(family):
            continue
        room = min(size["memory_gb"] * share // need_gb, size["vcpu"] // need_vcpu if need_vcpu else math.inf)
        fits = int(min(pods_cap, room))
        if fits >= 1 and (best is None or (size["usd"] / fits, -fits) < best[:2]):
            best = (size["usd"] / fits, -fits, slug, room / pods_cap)
    if best is None:
        raise SystemExit(f"no {family} Droplet holds a pod of {need_gb:.1f} GB, {need_vcpu:.2f} vCPU")
    inputs.price("digitalocean", "droplets", best[2])
    return best[2], -best[1], best[3]


def next_power_of_two(n: float) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1.0, n))))


def model(inputs: Inputs, users: int) -> dict[str, Any]:
    i, p = inputs, inputs.profile
    peak = p("peak_hour_share")
    off_peak = (1 - peak) / 23  # the other hours share the rest evenly
    # Agents: awake during each moment of activity and awake_after_min after it.
    wakes = i.bench("awake_periods_per_user_day", "awake_periods_per_user_day", "usage_day.json")
    calls = p("calls_per_day")
    awake_min = calls * (p("call_minutes") + p("awake_after_min")) + \
        (wakes - calls) * (i.assumption("text_moment_min") + p("awake_after_min"))
    agent_gb = i.bench("agent_memory_mb", "rss_mb_per_agent", "wake_local.json") / 1024 * \
        i.assumption("agent_memory_headroom")
    agent_cpu_s_day = i.bench("agent_cpu_s_per_user_day", "cpu_s_per_user_day.openclaw gateways", "usage_day.json")
    agent_vcpu = agent_cpu_s_day / (awake_min * 60) / i.assumption("cpu_target_utilisation")
    # A wake holds its pod from the claim to the first answer too; warm spares cover the wakes that
    # come while claimed spares are being replaced (twice over: wakes arrive in bursts).
    awake_min += wakes * i.bench("wake_from_sleeping_s", "wake_from_sleeping_s", "wake_kubernetes_sim.json") / 60
    awake_peak = users * awake_min * peak / 60
    awake_off = users * awake_min * off_peak / 60
    wakes_s_peak, wakes_s_off = users * wakes * peak / 3600, users * wakes * off_peak / 3600
    spares_peak = math.ceil(2 * wakes_s_peak * i.assumption("spare_replace_s"))
    spares_off = math.ceil(2 * wakes_s_off * i.assumption("spare_replace_s"))
    slug, per_node, pods_per_node_load = droplet_fit(i, "m-", agent_gb, agent_vcpu)
    headroom = i.assumption("autoscale_headroom")
    peak_nodes = math.ceil((awake_peak + spares_peak) * headroom / per_node)
    off_nodes = math.ceil((awake_off + spares_off) * headroom / per_node)
    pools = [Pool("agents", slug, peak_nodes, (peak_nodes + 23 * off_nodes) / 24 * HOURS_PER_MONTH,
                  i.price("digitalocean", "droplets", slug))]
    # Voice bridge: concurrent calls at the peak hour, CPU per call-minute.
    calls_peak = users * calls * p("call_minutes") * peak / 60
    bridge_cores = calls_peak * i.bench("bridge_cpu_s_per_call_minute", "cpu_s_per_call_minute",
                                        "voice_bridge.json") / 60 / i.assumption("cpu_target_utilisation")
    bridge_gb = calls_peak * i.bench("bridge_mb_per_call", "rss_mb_per_call", "voice_bridge.json") / 1024
    voice = i.prices["digitalocean"]["droplets"]["c-8"]
    voice_nodes = max(2, math.ceil(max(bridge_cores / voice["vcpu"], bridge_gb / (voice["memory_gb"] *
                                       i.assumption("allocatable_memory_share")))))
    pools.append(Pool("voice", "c-8", voice_nodes, voice_nodes * HOURS_PER_MONTH,
                      i.price("digitalocean", "droplets", "c-8")))
    # Temporal: events and actions at the peak hour.
    events_s = users * i.bench("history_events_per_user_day", "history_events_per_user_day", "usage_day.json") \
        * peak / 3600
    actions_s = users * i.bench("temporal_actions_per_user_day", "temporal_actions_per_user_day",
                                "usage_day.json") * peak / 3600
    # One Temporal cluster keeps its history in one database: past one PostgreSQL primary's writes,
    # users are sharded over several Temporal clusters, each sized for its share.
    per_vcpu = i.assumption("db_writes_per_vcpu_s")
    history_day_gib = users * i.bench("history_bytes_per_user_day", "history_bytes_per_user_day",
                                      "usage_day.json") / 2**30
    temporal_db = postgres_plan(i, "temporal", writes_s=events_s * i.assumption("temporal_db_writes_per_event"),
                                gib=history_day_gib * i.assumption("temporal_retention_days"),
                                hot_gib=history_day_gib * i.assumption("db_hot_days"), per_vcpu=per_vcpu)
    share_s, share_actions_s = events_s / temporal_db["clusters"], actions_s / temporal_db["clusters"]
    temporal = {"clusters": temporal_db["clusters"],
                "history_shards": max(512, next_power_of_two(share_s / i.assumption("temporal_events_per_shard_s"))),
                "history": max(3, math.ceil(share_s / i.assumption("temporal_events_per_history_pod_s"))),
                "frontend": max(3, math.ceil(share_actions_s / i.assumption("temporal_requests_per_frontend_pod_s"))),
                "matching": max(3, math.ceil(share_actions_s / i.assumption("temporal_tasks_per_matching_pod_s")))}
    # API and workers: their CPU per user-day at the peak hour; Temporal's pods beside them.
    platform_cpu_s = sum(i.bench(f"{role}_cpu_s_per_user_day", f"cpu_s_per_user_day.{role}", "usage_day.json")
                         for role in ("api", "worker"))
    platform_cores = users * platform_cpu_s * peak / 3600 / i.assumption("cpu_target_utilisation")
    temporal_cores = temporal["clusters"] * i.assumption("temporal_pod_vcpu") * \
        sum(temporal[k] for k in ("history", "frontend", "matching"))
    general = i.prices["digitalocean"]["droplets"]["g-4vcpu-16gb"]
    platform_nodes = max(3, math.ceil((platform_cores + temporal_cores + 4) / general["vcpu"]))
    pools.append(Pool("platform", "g-4vcpu-16gb", platform_nodes, platform_nodes * HOURS_PER_MONTH,
                      i.price("digitalocean", "droplets", "g-4vcpu-16gb")))
    # PostgreSQL: the platform's (rows kept a year); Temporal's is above.
    month_gib = users * i.bench("db_bytes_per_user_month", "db_bytes_per_user_month", "usage_day.json") / 2**30
    platform_db = postgres_plan(i, "platform", writes_s=users * i.bench(
        "db_writes_per_user_day", "db_writes_per_user_day", "usage_day.json") * peak / 3600,
        gib=month_gib * i.assumption("platform_db_retention_months"),
        hot_gib=month_gib / DAYS_PER_MONTH * i.assumption("db_hot_days"), per_vcpu=per_vcpu)
    # Spaces: every user's state (and its previous version); fetched and saved at each wake.
    state_gib = users * i.bench("state_bytes", "state_bytes", "wake_kubernetes_sim.json") / 2**30
    spaces = i.prices["digitalocean"]["spaces"]
    stored = state_gib * i.assumption("state_versions_kept")
    moved = state_gib * 2 * wakes * DAYS_PER_MONTH
    spaces_usd = i.price("digitalocean", "spaces", "subscription_usd") + \
        max(0.0, stored - spaces["included_storage_gib"]) * i.price("digitalocean", "spaces", "storage_usd_per_gib") + \
        max(0.0, moved - spaces["included_transfer_gib"]) * i.price("digitalocean", "spaces", "transfer_usd_per_gib")
    # Clusters: one cluster's pod and node limits; the HA control plane each.
    pods_peak = awake_peak + spares_peak + calls_peak / 50 + platform_nodes * 4
    nodes_peak = sum(pool.nodes_peak for pool in pools)
    clusters = max(1, math.ceil(pods_peak / i.assumption("max_pods_per_cluster")),
                   math.ceil(nodes_peak / i.assumption("max_nodes_per_cluster")))
    costs = {pool.name: pool.usd * pool.node_hours / HOURS_PER_MONTH for pool in pools}
    costs |= {"postgres": platform_db["usd"] + temporal_db["usd"], "spaces": spaces_usd,
              "load balancers": i.assumption("ingress_load_balancers") * clusters *
              i.price("digitalocean", "load_balancer", "usd_per_node"),
              "control planes": clusters * i.price("digitalocean", "kubernetes", "ha_control_plane_usd")}
    limits = {"pods per node": pods_per_node_load,
              "pods per cluster": pods_peak / i.assumption("max_pods_per_cluster"),
              "nodes per cluster": nodes_peak / i.assumption("max_nodes_per_cluster"),
              "volumes per Droplet": 0.0,  # sleeping users hold no volume; awake ones use emptyDir
              "Temporal history shards": share_s / (16384 * i.assumption("temporal_events_per_shard_s")),
              "Temporal's PostgreSQL primary": temporal_db["load"], "platform PostgreSQL primary": platform_db["load"]}
    return {"users": users, "awake_min_per_user_day": awake_min, "agents_awake_peak": math.ceil(awake_peak),
            "spares_peak": spares_peak,
            "calls_peak": math.ceil(calls_peak), "pools": pools, "temporal": temporal, "events_per_s_peak": events_s,
            "postgres": {"platform": platform_db, "temporal": temporal_db}, "clusters": clusters,
            "costs": costs, "usd_month": sum(costs.values()), "limits": limits}


def postgres_plan(inputs: Inputs, name: str, *, writes_s: float, gib: float, hot_gib: float,
                  per_vcpu: float) -> dict[str, Any]:
    """The smallest managed plan (a primary and a standby) taking the writes at half its vCPUs and
    holding the hot rows in memory, with storage added past what it includes; several clusters (users
    sharded) past the largest."""
    plans = [(slug, plan) for slug, plan in inputs.prices["digitalocean"]["postgres"].items() if isinstance(plan, dict)]
    extra = inputs.price("digitalocean", "postgres", "extra_storage_usd_per_gib")
    for slug, plan in plans:
        if plan["vcpu"] * per_vcpu >= writes_s and plan["memory_gb"] >= hot_gib:
            break
    count = max(1, math.ceil(writes_s / (plan["vcpu"] * per_vcpu)), math.ceil(hot_gib / plan["memory_gb"]))
    inputs.price("digitalocean", "postgres", slug)
    usd = 2 * count * (plan["usd"] + max(0.0, gib / count - plan["storage_gib"]) * extra)
    return {"plan": slug, "clusters": count, "gib": round(gib, 1), "usd": usd,
            "load": max(writes_s / (plan["vcpu"] * per_vcpu), hot_gib / plan["memory_gb"])}


CHANGES = {
    "pods per node": "agents per node capped by maxPods: the model keeps the node size whose memory fills "
                     "first (a bigger node would pay for memory no pod may use)",
    "pods per cluster": "several DOKS clusters, users sharded by user id (each cluster its own agents, voice "
                        "and workers; one Temporal and database tier, or one per shard)",
    "nodes per cluster": "several DOKS clusters, users sharded by user id",
    "volumes per Droplet": "not reached: sleeping users' state lives in Spaces",
    "Temporal history shards": "a second Temporal cluster, users sharded (shards are fixed at creation)",
    "Temporal's PostgreSQL primary": "several Temporal clusters, users sharded by user id (one database each), "
                                     "or Temporal on Cassandra",
    "platform PostgreSQL primary": "the platform database sharded by user id (or read replicas for the dashboard)",
}


def first_limit(limits: dict[str, float]) -> str:
    name, load = max(limits.items(), key=lambda item: item[1])
    if load >= 1:
        return f"{name} ({load:.1f}x): {CHANGES[name]}"
    return f"none hit; nearest {name} at {load:.0%}"


def per_use(inputs: Inputs) -> dict[str, float]:
    """What Twilio and Deepgram cost per user-month under the profile (not the platform's cost)."""
    i, p = inputs, inputs.profile
    call_min = p("calls_per_day") * p("call_minutes") * DAYS_PER_MONTH
    texts = (p("texts_in_per_day") + p("texts_out_per_day") + p("reminders_per_day")) * DAYS_PER_MONTH
    sms = i.price("twilio", "sms_usd_per_segment") + i.price("twilio", "sms_carrier_fee_usd_per_segment")
    return {"twilio": i.price("twilio", "number_usd_per_month")
            + call_min * (i.price("twilio", "voice_inbound_usd_per_min") + i.price("twilio", "media_streams_usd_per_min"))
            + texts * sms,
            "deepgram": call_min * i.price("deepgram", "voice_agent_usd_per_min")}


def report(result: dict[str, Any]) -> None:
    n = result["users"]
    print(f"\n== {n:,} users: {result['agents_awake_peak']:,} agents awake (and {result['spares_peak']:,} warm spares) "
          f"and {result['calls_peak']:,} calls at the peak hour; {result['clusters']} cluster(s)")
    for pool in result["pools"]:
        print(f"  pool {pool.name:<9} {pool.droplet:<15} {pool.nodes_peak:>6} nodes at the peak, "
              f"${pool.usd * pool.node_hours / HOURS_PER_MONTH:>12,.0f}/month")
    t = result["temporal"]
    print(f"  Temporal: {t['clusters']} cluster(s) of {t['history_shards']} history shards, frontend {t['frontend']}, "
          f"history {t['history']}, matching {t['matching']} ({result['events_per_s_peak']:.0f} events/s at the peak)")
    for name, db in result["postgres"].items():
        print(f"  PostgreSQL ({name}): {db['clusters']} x {db['plan']} + standby, {db['gib']:,} GiB, "
              f"{db['load']:.0%} of its capacity (writes, hot rows in memory), ${db['usd']:,.0f}/month")
    print("  cost/month: " + ", ".join(f"{k} ${v:,.0f}" for k, v in result["costs"].items()))
    print("  limits (share used): " + ", ".join(f"{name} {load:.0%}" for name, load in sorted(
        result["limits"].items(), key=lambda item: -item[1])))
    print(f"  platform: ${result['usd_month']:,.0f}/month = ${result['usd_month'] / n:.3f} per user-month; "
          f"first limit: {first_limit(result['limits'])}")


def main(results: Path, prices: Path) -> dict[str, Any]:
    inputs = Inputs(results, prices)
    outcomes = [model(inputs, users) for users in SCALES]
    for outcome in outcomes:
        report(outcome)
    usage = per_use(inputs)
    print(f"\nper use, not platform (per user-month): Twilio ${usage['twilio']:.2f} (number, "
          f"{PROFILE['calls_per_day'] * PROFILE['call_minutes'] * DAYS_PER_MONTH:.0f} call-minutes, texts), "
          f"Deepgram ${usage['deepgram']:.2f}")
    costs = [round(o["usd_month"] / o["users"], 3) for o in outcomes]
    return {"users": list(SCALES), "cost_per_user_month": costs, "cost_per_user_month_1m": costs[-1],
            "first_limit": [first_limit(o["limits"]) for o in outcomes],
            "inputs": {name: {"value": round(used.value, 4), "from": used.source}
                       for name, used in sorted(inputs.used.items())}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=HERE / "results", help="recorded benchmark lines")
    parser.add_argument("--prices", type=Path, default=HERE / "prices.toml")
    args = parser.parse_args()
    print(json.dumps(main(args.results, args.prices)), flush=True)

"""CPU per message by process kind, from one end-to-end row of bench/relay_e2e.py (its
cpu_seconds: each watched process tree, named as scripts/bench named it, and smtp-source).

Our own nodes are ingress, delivery and reconciler; Postfix's processes are the tree of its
master. Ingress CPU is divided by the messages accepted, delivery's by those delivered, the
rest by the messages relayed (delivered), so that every figure is microseconds per message.
"""

OUR_NODES = ("ingress", "delivery", "reconciler")
# In the order the tables print them.
KINDS = OUR_NODES + ("postfix", "broker", "load balancer", "redis", "dns", "load generator", "sink")


def kind(name):
    """The process kind of a watched name (ingress-2 -> ingress, tansu -> broker, ...)."""
    base = name.split("-")[0]
    return {"tansu": "broker", "haproxy": "load balancer", "smtp": "load generator", "sink": "sink",
            "dns": "dns", "redis": "redis", "postfix": "postfix"}.get(base, base)


def per_message_us(row):
    """{kind: CPU microseconds per message}, plus "our nodes" when any of ours ran."""
    accepted = row["messages"]
    delivered = max(row["messages"] - row["missing"], 1)
    seconds = {}
    for name, value in row.get("cpu_seconds", {}).items():
        seconds[kind(name)] = seconds.get(kind(name), 0.0) + (value or 0.0)
    figures = {name: value * 1e6 / (accepted if name == "ingress" else delivered) for name, value in seconds.items()}
    ours = [name for name in OUR_NODES if name in seconds]
    if ours:
        figures["our nodes"] = sum(seconds[name] for name in ours) * 1e6 / delivered
    return figures


def ordered(figures):
    """(kind, us) pairs in table order, then any kind this module does not know."""
    known = [name for name in ("our nodes",) + KINDS if name in figures]
    return [(name, figures[name]) for name in known + sorted(set(figures) - set(known))]

"""Plain-Python reference of TorchEasyRec's tree files (one object per node), for cross-checks.

It follows TorchEasyRec's ``TreeGenerator`` / ``TreeBuilder`` / ``TreeSearch`` step by step
(recursive code assignment, leaves pulled to the last level, ``Counter``/``mode`` and mean
attributes, level-order files), with the one fix rectool documents: leaves are pulled to
the first code of the last level, ``(n**L - 1)/(n - 1)``, which equals TorchEasyRec's
``n**L - 1`` for binary trees.
"""

from __future__ import annotations

from collections import Counter


def gen_codes(n_items: int, n: int) -> list[int]:
    codes = [0] * n_items

    def rec(start: int, end: int, code: int) -> None:
        if end <= start:
            return
        if end == start + 1:
            codes[start] = code
            return
        for i in range(n):
            rec(int(start + i * (end - start) / n), int(start + (i + 1) * (end - start) / n), n * code + n - i)

    rec(0, n_items, 0)
    return codes


def _fmt(v, null: str) -> str:
    if v is None:
        return null
    if isinstance(v, float):
        return repr(v)
    return str(v)


def build_files(items: list[dict], id_field: str, codes: list[int], n: int, attr_fields: list[str],
                raw_attr_fields: list[str], float32_fields: tuple[str, ...] = ()) -> dict[str, str]:
    """``items`` in TorchEasyRec's leaf order, ``codes`` one per item -> {file name: text}."""
    import numpy as np

    level, span = 0, 1
    while span < len(items):
        span *= n
        level += 1
    first = (n**level - 1) // (n - 1)
    leaves = {}
    for item, code in zip(items, codes, strict=True):
        while code < first:
            code = code * n + 1
        leaves[code] = item
    max_id = max(0, max(item[id_field] for item in items))
    nodes: dict[int, dict] = {}
    for code, item in leaves.items():
        nodes[code] = {"id": item[id_field], "leaves": [item]}
    for item, code in zip(items, codes, strict=True):  # ancestors collect leaves in item order
        while code < first:
            code = code * n + 1
        c = code
        while c > 0:
            c = (c - 1) // n
            nodes.setdefault(c, {"id": max_id + c + 1, "leaves": []})["leaves"].append(item)
    order = sorted(nodes)
    lv = {c: 0 for c in order}
    for c in order:
        if c > 0:
            lv[c] = lv[(c - 1) // n] + 1

    string_fields = {f for f in attr_fields if any(isinstance(item[f], str) for item in items)}

    def attrs(c: int) -> list[str]:
        node = nodes[c]
        out = []
        for f in attr_fields:
            vals = [leaf[f] for leaf in node["leaves"]]
            if c in leaves:
                v = vals[0]
            elif f in string_fields:
                v = Counter(vals).most_common(1)[0][0]
            else:
                cnt = Counter(x for x in vals if x is not None)
                v = min(cnt, key=lambda x: (-cnt[x], x)) if cnt else None
            out.append(_fmt(v, ""))
        for f in raw_attr_fields:
            vals = [leaf[f] for leaf in node["leaves"] if leaf[f] is not None]
            if c in leaves:
                v = node["leaves"][0][f]
            else:
                v = sum(vals) / len(vals) if vals else None
            if v is not None and f in float32_fields:
                v = float(np.float32(v))
            out.append(_fmt(v, "0"))
        return out

    node_lines = ["id:int64\tweight:float\tfeature:string"]
    for i, c in enumerate(order):
        fea = [str(lv[c]), str(nodes[c]["id"])] + attrs(c)
        if i == 0:
            node_lines.append("-1\t1.0\t" + ",".join(["-1"] + fea[1:]))
        node_lines.append(f"{nodes[c]['id']}\t1.0\t" + ",".join(fea))
    last = max(lv.values())
    edge_lines = ["src_id:int64\tdst_id:int64\tweight:float"]
    for c in order:
        if lv[c] != last:
            continue
        a = c
        for _ in range(last - 1):
            a = (a - 1) // n
            edge_lines.append(f"{nodes[c]['id']}\t{nodes[a]['id']}\t1.0")
    pred = ["src_id:int64\tdst_id:int64\tweight:float", f"-1\t{nodes[0]['id']}\t1.0"]
    for c in order[1:]:
        pred.append(f"{nodes[(c - 1) // n]['id']}\t{nodes[c]['id']}\t1.0")
    serving = [f"{last + 1} {n}"] + [f"{c} {nodes[c]['id']}" for c in order]
    return {"node_table.txt": "\n".join(node_lines) + "\n", "edge_table.txt": "\n".join(edge_lines) + "\n",
            "predict_edge_table.txt": "\n".join(pred) + "\n", "serving_tree": "\n".join(serving) + "\n"}

"""packaging/kubernetes/daemonset.yaml: the fields that make pyoomd work on
every node, and a ConfigMap the daemon accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pyoomd.config import settings_from_text

MANIFEST = Path(__file__).resolve().parent.parent / "packaging" / "kubernetes" / "daemonset.yaml"


@pytest.fixture(scope="module")
def docs() -> dict[str, dict[str, Any]]:
    out = {d["kind"]: d for d in yaml.safe_load_all(MANIFEST.read_text()) if d}
    assert set(out) == {"ConfigMap", "DaemonSet"}
    return out


def pod(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = docs["DaemonSet"]["spec"]["template"]["spec"]
    return spec


def container(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (c,) = pod(docs)["containers"]
    return c  # type: ignore[no-any-return]


def test_kinds_and_selector(docs: dict[str, dict[str, Any]]) -> None:
    ds = docs["DaemonSet"]
    assert ds["apiVersion"] == "apps/v1"
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert docs["ConfigMap"]["metadata"]["namespace"] == ds["metadata"]["namespace"] == "kube-system"


def test_node_wide_and_critical(docs: dict[str, dict[str, Any]]) -> None:
    p = pod(docs)
    assert p["hostPID"] is True
    assert p["priorityClassName"] == "system-node-critical"
    # one toleration that matches every taint
    assert {"operator": "Exists"} in p["tolerations"]
    assert "nodeSelector" not in p and "affinity" not in p


def test_capabilities_not_privileged(docs: dict[str, dict[str, Any]]) -> None:
    sc = container(docs)["securityContext"]
    assert sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) == {"KILL", "IPC_LOCK", "SYS_PTRACE", "SYS_RESOURCE"}
    assert sc["runAsUser"] == 0


def test_resources_bounded(docs: dict[str, dict[str, Any]]) -> None:
    res = container(docs)["resources"]
    assert res["limits"]["memory"] == res["requests"]["memory"]  # mlockall: all of it resident
    assert "cpu" in res["requests"] and "cpu" not in res["limits"]


def test_metrics_port_annotated(docs: dict[str, dict[str, Any]]) -> None:
    ann = docs["DaemonSet"]["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true"
    port = int(ann["prometheus.io/port"])
    assert port == 9101
    assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in container(docs)["ports"]
    settings = configmap_settings(docs)
    assert settings.metrics.listen is not None and settings.metrics.listen.endswith(f":{port}")


def configmap_settings(docs: dict[str, dict[str, Any]]) -> Any:
    return settings_from_text("configmap:config.yaml", docs["ConfigMap"]["data"]["config.yaml"])


def test_config_from_configmap(docs: dict[str, dict[str, Any]]) -> None:
    c = container(docs)
    args = c["args"]
    cfg_path = args[args.index("--config") + 1]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod(docs)["volumes"]}
    cm_vol = next(name for name, v in vols.items() if "configMap" in v)
    assert vols[cm_vol]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    assert mounts[cm_vol]["readOnly"] is True
    item_paths = {mounts[cm_vol]["mountPath"] + "/" + i["path"] for i in vols[cm_vol]["configMap"]["items"]}
    assert cfg_path in item_paths
    # the daemon accepts it
    settings = configmap_settings(docs)
    assert settings.log_format == "json" and settings.dry_run is False
    # the status socket's directory is a writable volume
    sock_dir = str(Path(settings.status.socket).parent)
    assert any(m["mountPath"] == sock_dir and not m.get("readOnly") for m in c["volumeMounts"])
    assert args[0] == "run" and "--dry-run" not in args

"""The generated CRDs: in sync with the models, and structural as the API server demands."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, Field

from tenant_operator.api import crds, names
from tenant_operator.api.fields import (
    QUANTITY_PATTERN,
    RESOURCE_NAME_PATTERN,
    ResourceMap,
)

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"
TENANTS = f"{names.GROUP}_tenants.yaml"
PLANS = f"{names.GROUP}_tenantplans.yaml"
SCHEMAS = f"{names.GROUP}_databaseschemas.yaml"
SERVERS = f"{names.GROUP}_databaseservers.yaml"
ALL = [TENANTS, PLANS, SCHEMAS, SERVERS]


def _version(document: dict[str, Any]) -> dict[str, Any]:
    (version,) = document["spec"]["versions"]
    return version


def _root(document: dict[str, Any]) -> dict[str, Any]:
    return _version(document)["schema"]["openAPIV3Schema"]


def _nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from _nodes(child, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _nodes(schema["additionalProperties"], f"{path}[*]")
    if "items" in schema:
        yield from _nodes(schema["items"], f"{path}[]")


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from _keys(item)


@pytest.fixture(scope="module")
def documents() -> dict[str, dict[str, Any]]:
    return crds.crd_documents()


def test_checked_in_crds_match_models(documents):
    on_disk = {path.name: yaml.safe_load(path.read_text()) for path in sorted(CRD_DIR.glob("*.yaml"))}

    assert on_disk == documents, (
        "crds/ is out of date with tenant_operator/api: run `tenant-operator crds` "
        "(or python -c 'from tenant_operator.api.crds import write_crds; write_crds(\"crds\")') and commit the result"
    )


def test_checked_in_crds_carry_the_generated_header():
    for path in CRD_DIR.glob("*.yaml"):
        assert path.read_text().startswith(crds.HEADER), path.name


def test_write_crds_writes_what_crd_documents_returns(tmp_path, documents):
    written = crds.write_crds(tmp_path / "out")

    assert sorted(p.name for p in written) == sorted(documents)
    for path in written:
        assert yaml.safe_load(path.read_text()) == documents[path.name]
        assert "&id" not in path.read_text(), "YAML anchors make the CRD hard to read and diff"


@pytest.mark.parametrize("filename", ALL)
def test_schema_has_no_json_schema_leftovers(documents, filename):
    keys = set(_keys(_root(documents[filename])))

    assert not keys & {"$ref", "$defs", "anyOf", "allOf", "oneOf", "title", "uniqueItems", "propertyNames"}
    assert "x-kubernetes-preserve-unknown-fields" not in keys


@pytest.mark.parametrize("filename", ALL)
def test_every_schema_node_has_a_type(documents, filename):
    # int-or-string nodes are the structural schema's one exception: no type at all.
    untyped = [
        path or "<root>"
        for path, node in _nodes(_root(documents[filename]))
        if "type" not in node and not node.get("x-kubernetes-int-or-string")
    ]

    assert untyped == []


@pytest.mark.parametrize("filename", ALL)
def test_spec_fields_carry_no_openapi_pattern(documents, filename):
    # A pattern failure answers with the regular expression; a CEL rule's message
    # says in words what is allowed.
    spec = _root(documents[filename])["properties"]["spec"]

    assert [path for path, node in _nodes(spec) if "pattern" in node] == []


@pytest.mark.parametrize("filename", ALL)
def test_properties_never_beside_additional_properties(documents, filename):
    both = [p for p, node in _nodes(_root(documents[filename])) if "properties" in node and "additionalProperties" in node]

    assert both == []


@pytest.mark.parametrize("filename", ALL)
def test_every_map_and_list_is_bounded_where_cel_reads_it(documents, filename):
    # CEL cost is estimated from the largest admissible value: unbounded maps or
    # lists above a rule make the API server refuse the whole CRD.
    def walk(node: dict[str, Any], bounded: bool, path: str) -> Iterator[str]:
        if "x-kubernetes-validations" in node and not bounded:
            yield path
        if node.get("type") == "object" and "additionalProperties" in node:
            yield from walk(node["additionalProperties"], bounded and "maxProperties" in node, f"{path}[*]")
        if "items" in node:
            yield from walk(node["items"], bounded and "maxItems" in node, f"{path}[]")
        for name, child in node.get("properties", {}).items():
            yield from walk(child, bounded, f"{path}.{name}")

    assert list(walk(_root(documents[filename]), True, "")) == []


@pytest.mark.parametrize("filename", ALL)
def test_every_kind_is_cluster_scoped_with_status_subresource(documents, filename):
    document = documents[filename]
    version = _version(document)

    assert document["spec"]["group"] == names.GROUP
    assert document["spec"]["scope"] == "Cluster"
    assert version["name"] == names.VERSION
    assert version["served"] is True and version["storage"] is True
    assert version["subresources"] == {"status": {}}
    assert _root(document)["required"] == ["spec"]
    assert document["metadata"]["name"] == f"{document['spec']['names']['plural']}.{names.GROUP}"


def test_tenant_names_and_printer_columns(documents):
    document = documents[TENANTS]

    assert document["spec"]["names"] == {
        "kind": "Tenant",
        "listKind": "TenantList",
        "plural": "tenants",
        "singular": "tenant",
        "shortNames": ["tn"],
        "categories": ["tenancy"],
    }
    columns = {c["name"]: (c["type"], c["jsonPath"], c.get("priority", 0))
               for c in _version(document)["additionalPrinterColumns"]}
    assert columns == {
        "Plan": ("string", ".spec.plan", 0),
        "Tier": ("string", ".status.tier", 0),
        "Phase": ("string", ".status.phase", 0),
        "Ready": ("string", '.status.conditions[?(@.type=="Ready")].status', 0),
        "Age": ("date", ".metadata.creationTimestamp", 0),
        # -o wide
        "Namespace": ("string", ".status.namespace", 1),
        "Database": ("string", ".status.database.database", 1),
        "Schema": ("string", ".status.database.schema", 1),
        "Size": ("integer", ".status.usage.databaseBytes", 1),
        "Of-Max": ("string", ".status.usage.maxSizeShare", 1),
        "Connections": ("integer", ".status.usage.connections", 1),
        "Message": ("string", '.status.conditions[?(@.type=="Ready")].message', 1),
    }


def test_tenant_plan_names_and_printer_columns(documents):
    document = documents[PLANS]

    assert document["spec"]["names"]["kind"] == "TenantPlan"
    assert document["spec"]["names"]["plural"] == "tenantplans"
    assert document["spec"]["names"]["shortNames"] == ["tnp"]
    columns = {c["name"]: (c["type"], c["jsonPath"]) for c in _version(document)["additionalPrinterColumns"]}
    assert columns == {"Display Name": ("string", ".spec.displayName"),
                       "Shared": ("string", '.spec.tiers[?(@=="shared")]'),
                       "Isolated": ("string", '.spec.tiers[?(@=="isolated")]'),
                       "Age": ("date", ".metadata.creationTimestamp")}


def test_tenant_name_rules_sit_at_the_root_and_point_at_the_name(documents):
    root = _root(documents[TENANTS])
    length, characters = root["x-kubernetes-validations"]

    assert root["properties"]["metadata"] == {"type": "object", "properties": {"name": {"type": "string", "maxLength": 253}}}
    assert length["rule"] == f"size(self.metadata.name) <= {names.TENANT_NAME_MAX_LENGTH}"
    assert f"at most {names.TENANT_NAME_MAX_LENGTH} characters" in length["message"]
    assert characters["rule"] == f"self.metadata.name.matches('{names.TENANT_NAME_PATTERN}')"
    assert "lowercase letters, digits and '-'" in characters["message"]
    for rule in (length, characters):
        assert rule["fieldPath"] == ".metadata.name"
        assert "tenant-<name>" in rule["message"] and "tenant_<name>" in rule["message"]


def test_tenant_plan_name_fits_the_plan_label(documents):
    root = _root(documents[PLANS])
    (rule,) = root["x-kubernetes-validations"]

    assert rule["rule"] == "size(self.metadata.name) <= 63"
    assert rule["fieldPath"] == ".metadata.name"
    assert "spec.plan" in rule["message"]


@pytest.mark.parametrize(
    ("name", "accepted"),
    [("acme", True), ("a", True), ("acme-2", True), ("a" * 40, True), ("a" * 41, False), ("2acme", False),
     ("acme-", False), ("Acme", False), ("ac_me", False), ("ac.me", False)],
)
def test_tenant_name_pattern_means_what_the_message_says(name, accepted):
    # CEL's matches() is RE2 and Python's re agrees on this simple pattern.
    fits = bool(re.match(names.TENANT_NAME_PATTERN, name)) and len(name) <= names.TENANT_NAME_MAX_LENGTH
    assert fits is accepted


def test_tenant_spec_schema(documents):
    spec = _root(documents[TENANTS])["properties"]["spec"]
    props = spec["properties"]

    assert spec["required"] == ["plan"]
    assert props["tier"]["enum"] == ["shared", "isolated"] and props["tier"]["default"] == "shared"
    assert props["database"]["properties"]["reclaimPolicy"]["default"] == "Retain"
    assert props["networkIsolation"]["default"] is True
    assert props["owners"]["maxItems"] == 50
    assert props["owners"]["items"]["properties"]["kind"]["enum"] == ["User", "Group", "ServiceAccount"]
    required, forbidden = props["owners"]["items"]["x-kubernetes-validations"]
    assert required["rule"] == "self.kind != 'ServiceAccount' || has(self.namespace)"
    assert (required["fieldPath"], required["reason"]) == (".namespace", "FieldValueRequired")
    assert forbidden["rule"] == "self.kind == 'ServiceAccount' || !has(self.namespace)"
    assert (forbidden["fieldPath"], forbidden["reason"]) == (".namespace", "FieldValueForbidden")
    (plan_rule,) = props["plan"]["x-kubernetes-validations"]
    assert props["plan"]["maxLength"] == 63 and "name of a TenantPlan" in plan_rule["message"]
    assert all(node.get("description") for path, node in _nodes(spec) if path), "kubectl explain needs descriptions"


def test_quantity_maps_carry_key_and_value_rules(documents):
    quota = _root(documents[PLANS])["properties"]["spec"]["properties"]["quota"]

    assert quota["type"] == "object" and quota["maxProperties"] == 64
    key_rule, quota_name_rule, whole_rule = quota["x-kubernetes-validations"]
    assert RESOURCE_NAME_PATTERN in key_rule["rule"]
    assert "invalid resource name '" in key_rule["messageExpression"]
    assert "cannot go into a ResourceQuota" in quota_name_rule["messageExpression"]
    assert "quantity(self[k]).isInteger()" in whole_rule["rule"]
    assert "is not a whole number" in whole_rule["messageExpression"]
    value = quota["additionalProperties"]
    # `pods: 20` and `pods: "20"` alike; the bound keeps CEL's cost estimate small.
    assert value["x-kubernetes-int-or-string"] is True and "type" not in value
    assert value["maxLength"] == 64
    assert "pattern" not in value
    (rule,) = value["x-kubernetes-validations"]
    assert rule["rule"].startswith("type(self) == int ? self >= 0 : ")
    assert f"r'{QUANTITY_PATTERN}'" in rule["rule"] and "isQuantity(self)" in rule["rule"]
    assert rule["message"] == "must be a non-negative Kubernetes quantity such as 500m, 2 or 1Gi"


def test_tiers_are_a_set(documents):
    tiers = _root(documents[PLANS])["properties"]["spec"]["properties"]["tiers"]

    assert tiers["x-kubernetes-list-type"] == "set"
    assert tiers["minItems"] == 1 and tiers["default"] == ["shared"]


def test_status_is_fully_typed_and_conditions_are_a_map(documents):
    status = _root(documents[TENANTS])["properties"]["status"]
    conditions = status["properties"]["conditions"]
    migration = status["properties"]["migration"]

    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert "type" in conditions["items"]["required"]
    assert set(migration["properties"]) >= {"from", "to", "step", "started", "tables", "rowsCopied"}
    assert status["properties"]["phase"]["enum"][0] == "Pending"


def _has_null(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_null(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_null(item) for item in value)
    return value is None


def test_defaults_hold_no_nulls(documents):
    # Optional fields default to None in Python; in Kubernetes that means absent.
    for filename in ALL:
        for path, node in _nodes(_root(documents[filename])):
            assert "default" not in node or not _has_null(node["default"]), path


def test_converter_refuses_unions():
    class Union(BaseModel):
        value: int | str

    with pytest.raises(ValueError, match="unions"):
        crds.structural_schema(Union)


def test_converter_refuses_key_patterns_without_a_cel_rule():
    from typing import Annotated

    from pydantic import StringConstraints

    class Keys(BaseModel):
        value: dict[Annotated[str, StringConstraints(pattern="^[a-z]+$")], str]

    with pytest.raises(ValueError, match="CEL"):
        crds.structural_schema(Keys)


def test_converter_refuses_int_or_string_on_other_types():
    class Holder(BaseModel):
        value: int = Field(json_schema_extra={"x-kubernetes-int-or-string": True})

    with pytest.raises(ValueError, match="int-or-string"):
        crds.structural_schema(Holder)


def test_converter_refuses_keywords_kubernetes_lacks():
    class Exclusive(BaseModel):
        value: int = Field(gt=0)

    with pytest.raises(ValueError, match="exclusiveMinimum"):
        crds.structural_schema(Exclusive)


def test_converter_keeps_cel_rules_of_annotated_types():
    class Holder(BaseModel):
        resources: ResourceMap = {}

    schema = crds.structural_schema(Holder)

    assert schema["properties"]["resources"]["x-kubernetes-validations"]
    assert schema["properties"]["resources"]["additionalProperties"]["x-kubernetes-validations"]

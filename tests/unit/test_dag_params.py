"""The DAGs' trigger-form Params (edge_training.dag_params): draft-07 schemas that refuse what they did.

The dialect makes Airflow's check of each schema on every parse cheaper (bench/overhead.py measures the
parse); these tests hold what the change must not cost: a keyword draft-07 does not know would be
ignored without a word, and a bad value must still be refused, as the API server refuses a trigger's conf
(through the serialized DAG).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from jsonschema import Draft7Validator

from airflow.dag_processing.dagbag import DagBag
from airflow.exceptions import ParamValidationError
from airflow.serialization.serialized_objects import DagSerialization
from edge_training.dag_params import SCHEMA_DIALECT, form_param

REPO = Path(__file__).resolve().parents[2]
#: Keywords that annotate a form field rather than constrain its value.
ANNOTATIONS = {"$schema", "description", "title", "default", "examples", "$comment"}


@pytest.fixture(scope="module")
def dags():
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}, bag.import_errors
    return {dag_id: DagSerialization.from_dict(DagSerialization.to_dict(bag.dags[dag_id]))
            for dag_id in ("edge_training", "edge_deploy")}


def test_every_param_is_a_draft_07_schema_using_only_keywords_draft_07_knows(dags):
    checked = 0
    for dag_id, dag in dags.items():
        for name in dag.params:
            schema = dag.params.get_param(name).schema
            assert schema.get("$schema") == SCHEMA_DIALECT, (dag_id, name, schema)
            Draft7Validator.check_schema(schema)
            unknown = set(schema) - set(Draft7Validator.VALIDATORS) - ANNOTATIONS
            assert not unknown, f"{dag_id} param {name}: draft-07 ignores {sorted(unknown)}"
            checked += 1
    assert checked == 22  # 17 of edge_training, 5 of edge_deploy


@pytest.mark.parametrize("dag_id, conf, says", [
    ("edge_training", {"partition": "2026-02-30"}, "is not a 'date'"),
    ("edge_training", {"partition": "yesterday"}, "is not a 'date'"),
    ("edge_training", {"window_days": 0}, "less than the minimum of 1"),
    ("edge_training", {"window_days": 32}, "greater than the maximum of 31"),
    ("edge_training", {"min_days": "3"}, "is not of type 'null', 'integer'"),
    ("edge_training", {"model_name": "123"}, "does not match"),
    ("edge_training", {"force_retrain": "yes"}, "is not of type 'boolean'"),
    ("edge_training", {"gate_tolerance": -0.1}, "less than the minimum of 0"),
    ("edge_deploy", {"serving_port": 70000}, "greater than the maximum of 65533"),
    ("edge_deploy", {"model_version": "a b"}, "does not match"),
])
def test_a_bad_value_in_a_triggers_conf_is_still_refused(dags, dag_id, conf, says):
    dags[dag_id].params.validate()  # the defaults pass
    with pytest.raises(ParamValidationError, match=says):
        dags[dag_id].params.deep_merge(conf).validate()  # as create_dagrun does with a trigger's conf


def test_good_values_pass(dags):
    conf = {"partition": "2026-11-10", "window_days": 7, "min_days": 5, "model_name": "pump-failure2"}
    assert dags["edge_training"].params.deep_merge(conf).validate()["window_days"] == 7


def test_form_param_keeps_its_dialect():
    assert form_param(1, type="integer").schema == {"type": "integer", "$schema": SCHEMA_DIALECT}
    with pytest.raises(ValueError, match=r"found \$schema 'https://json-schema.org/draft/2020-12/schema'"):
        form_param(1, type="integer", **{"$schema": "https://json-schema.org/draft/2020-12/schema"})

"""cdk-nag's AWS Solutions checks and cfn-lint over the synthesized template: both clean."""

from __future__ import annotations

import json

from aws_cdk.assertions import Annotations, Match


def test_cdk_nag_reports_no_unsuppressed_finding(stack):
    annotations = Annotations.from_stack(stack)
    errors = annotations.find_error("*", Match.string_like_regexp("AwsSolutions-.*"))
    warnings = annotations.find_warning("*", Match.string_like_regexp("AwsSolutions-.*"))
    assert [(e.id, e.entry.data) for e in errors] == []
    assert [(w.id, w.entry.data) for w in warnings] == []


def test_every_suppression_gives_a_reason(resources):
    suppressed = 0
    for resource in resources.values():
        for suppression in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", []):
            assert suppression["id"].startswith("AwsSolutions-")
            assert len(suppression["reason"]) >= 40, suppression
            suppressed += 1
    assert suppressed > 0


def test_cfn_lint_is_clean(template, tmp_path):
    from cfnlint.api import ManualArgs, lint_file

    path = tmp_path / "Shazzam.template.json"
    path.write_text(json.dumps(template.to_json()))
    # W3005: CDK has each function DependsOn its role as well as GetAtt-ing it; redundant, harmless, CDK's.
    matches = lint_file(path, config=ManualArgs(ignore_checks=["W3005"], regions=["eu-west-1", "us-east-1"]))
    assert [str(m) for m in matches] == []

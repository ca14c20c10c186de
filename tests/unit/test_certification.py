"""The certificate in words, as `flywheel status` prints it."""

from flywheel.domain.certification import curve_lines, explain, min_all_correct

# Certified for its most confident 80%, right on 98.5% of its top 90%, below 95% on its top 95%
CERTIFIED_AT_80 = {
    "reached": True, "threshold": 0.4138, "coverage": 0.80, "n": 179,
    "target_accuracy": 0.95, "confidence": 0.95,
    "labels_needed": [
        {"coverage": 0.8, "observed_accuracy": 0.99, "labels": 150},
        {"coverage": 0.9, "observed_accuracy": 0.985, "labels": 260},
        {"coverage": 0.95, "observed_accuracy": 0.94, "labels": None},
    ],
}  # fmt: skip


def test_a_certified_model_says_what_it_auto_labels_and_what_more_labels_would_buy():
    block = dict(CERTIFIED_AT_80)
    assert explain(block) == (
        "auto-labels confidence >= 0.414: 80.0% of 179 random labels certify accuracy >= 95% "
        "with probability 95%; about 81 more random labels (audit answers or a random seed) "
        "would certify 90% if the model stays as accurate"
    )


def test_nothing_certified_says_why_and_how_many_labels_would_change_it():
    block = {
        "reached": False, "threshold": 1.01, "coverage": 0.0, "n": 36,
        "target_accuracy": 0.95, "confidence": 0.95,
        "labels_needed": [{"coverage": 0.8, "observed_accuracy": 1.0, "labels": 92}],
    }  # fmt: skip
    text = explain(block)
    assert text.startswith("auto-labels nothing: 36 random labels cannot certify accuracy >= 95%")
    assert "(at least 59 all correct are needed)" in text
    assert "about 56 more random labels" in text and "would certify 80%" in text


def test_min_all_correct_matches_the_clopper_pearson_rule():
    assert min_all_correct(0.95, 0.95) == 59 and min_all_correct(0.98, 0.95) == 149


def test_the_models_own_minimum_is_quoted_when_metrics_carry_it():
    block = {
        "reached": False, "threshold": 1.01, "coverage": 0.0, "n": 100,
        "target_accuracy": 0.98, "confidence": 0.95, "min_all_correct": 217,
    }  # fmt: skip
    assert "(at least 217 all correct are needed)" in explain(block)


def test_the_curve_says_what_each_step_of_coverage_needs():
    block = dict(CERTIFIED_AT_80)
    assert curve_lines(block) == [
        "most confident 80%: 99.0% right; certified",
        "most confident 90%: 98.5% right; about 81 more random labels (260 in all)",
        "most confident 95%: 94.0% right; below the target: more labels cannot certify it, "
        "a better model can",
    ]

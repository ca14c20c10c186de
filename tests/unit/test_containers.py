"""Image by instance type: CPU image for CPU instances, GPU image for GPU ones, override wins."""

import pytest
from flywheel.domain.containers import container_image, processor
from flywheel.errors import ConfigurationError
from template_settings import template_settings

CPU, GPU = (
    "acct.dkr.ecr/pytorch-training:2.6-cpu-py312",
    "acct.dkr.ecr/pytorch-training:2.6-gpu-py312",
)


@pytest.mark.parametrize(
    ("instance_type", "expected"),
    [
        ("ml.g5.xlarge", "gpu"),
        ("ml.g4dn.xlarge", "gpu"),
        ("ml.g6e.2xlarge", "gpu"),
        ("ml.p3.2xlarge", "gpu"),
        ("ml.p4d.24xlarge", "gpu"),
        ("ml.p5.48xlarge", "gpu"),
        ("ml.m5.xlarge", "cpu"),
        ("ml.m6i.large", "cpu"),
        ("ml.c5.2xlarge", "cpu"),
        ("ml.c7i.4xlarge", "cpu"),
        ("ml.r5.large", "cpu"),
        ("ml.t3.medium", "cpu"),
        ("ml.trn1.2xlarge", "neuron"),
        ("ml.inf2.xlarge", "neuron"),
    ],
)
def test_processor_follows_the_instance_family(instance_type, expected):
    assert processor(instance_type) == expected


def test_cpu_instances_get_the_cpu_image_and_gpu_instances_the_gpu_image():
    assert container_image("ml.m5.xlarge", CPU, GPU) == CPU
    assert container_image("ml.c5.xlarge", CPU, GPU) == CPU
    assert container_image("ml.g5.xlarge", CPU, GPU) == GPU


def test_serverless_inference_has_no_instance_type_and_gets_the_cpu_image():
    assert container_image(None, CPU, GPU) == CPU


def test_the_override_parameter_wins_even_for_instance_types_without_an_image():
    assert container_image("ml.m5.xlarge", CPU, GPU, "my/image:1") == "my/image:1"
    assert container_image("ml.trn1.2xlarge", CPU, GPU, "neuron/image:1") == "neuron/image:1"


def test_neuron_and_unknown_types_say_what_to_set():
    with pytest.raises(ConfigurationError, match="TrainingImageUri"):
        container_image("ml.trn1.2xlarge", CPU, GPU)
    with pytest.raises(ConfigurationError, match="not a SageMaker instance type"):
        container_image("g5.xlarge", CPU, GPU)
    with pytest.raises(ConfigurationError, match="no GPU PyTorch image"):
        container_image("ml.g5.xlarge", CPU, "")


def promote_settings(**env: str):
    images = {"INFERENCE_CPU_IMAGE_URI": "inf-cpu", "INFERENCE_GPU_IMAGE_URI": "inf-gpu"}
    return template_settings("PromoteFunction", **images, **env)


def test_endpoints_get_cpu_for_serverless_and_their_instance_types_image_otherwise():
    from flywheel.services.promote import inference_image

    gpu = {"ENDPOINT_INSTANCE_TYPE": "ml.g5.xlarge"}
    assert inference_image(promote_settings(ENDPOINT_MODE="serverless", **gpu)) == "inf-cpu"
    assert inference_image(promote_settings(ENDPOINT_MODE="instance", **gpu)) == "inf-gpu"
    assert inference_image(promote_settings(ENDPOINT_MODE="instance")) == "inf-cpu"  # the default
    override = promote_settings(ENDPOINT_MODE="instance", INFERENCE_IMAGE_URI="my/inf:1", **gpu)
    assert inference_image(override) == "my/inf:1"

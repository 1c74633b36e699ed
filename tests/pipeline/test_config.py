from memgpt.config import MEMORY_KINDS as MODEL_KINDS
from pipeline.config import MEMORY_KINDS


def test_the_job_offers_every_memory_kind_of_the_model():
    assert MEMORY_KINDS == MODEL_KINDS

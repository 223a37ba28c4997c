"""Input scaling: the committed statistics against the data, and what the network sees."""
import pytest
import torch

from hts_ep import Config, Ensemble, data
from hts_ep.network import eta1_gain


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_input_stats_are_the_training_images(dataset):
    if data.unavailable(dataset):
        pytest.skip(f"{dataset} missing here")
    x = data.load(dataset, train=True).x
    got, want = data.input_stats(x), data.INPUT_STATS[dataset]
    assert got.mean == pytest.approx(want.mean, abs=5e-6) and got.std == pytest.approx(want.std, abs=5e-6)
    assert got.eta1_gain == pytest.approx(want.eta1_gain, abs=5e-5)


def test_standardised_inputs_and_their_eta1():
    stats = data.INPUT_STATS["fashion-mnist"]
    c = Config(dataset="fashion-mnist", inputs="standardised", eta1=0.35)
    split = data.Split(torch.tensor([[0.0, stats.mean, 1.0]]), torch.tensor([0]))
    x = data.scaled(split, c).x
    assert x[0, 1].item() == pytest.approx(0.0, abs=1e-7)
    assert x[0, 0].item() == pytest.approx(-stats.mean / stats.std) and x[0, 2].item() == pytest.approx(
        (1 - stats.mean) / stats.std)
    assert data.scaled(split, c.replace(inputs="unit")) is split
    assert eta1_gain(c) == stats.eta1_gain and eta1_gain(c.replace(inputs="unit")) == 1.0
    ens = Ensemble([c.replace(n_hidden=16)], device="cpu")
    assert ens.eta1.item() == pytest.approx(0.35 * stats.eta1_gain)

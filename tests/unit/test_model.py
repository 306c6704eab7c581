"""The seq2seq model: masks, shapes, gradients, and the step API agreeing with forward()."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from mtkit.config import ATTENTION_TYPES, LossConfig, ModelConfig
from mtkit.corpus.batching import collate
from mtkit.model.loss import Criterion
from mtkit.model.seq2seq import Seq2Seq

VOCAB = 40
# "lstm_peephole": model.cell=lstm with model.peepholes=true (mtkit.model.peephole)
CELLS = ("gru", "lstm", "lstm_peephole")
COMBOS = list(itertools.product(CELLS, ATTENTION_TYPES, (True, False)))


def make_model(
    cell: str,
    attention: str,
    bidirectional: bool,
    input_feed: bool = True,
    layers: int = 2,
    dropout: float = 0.0,
    seed: int = 0,
    size: int = 16,
    output_ids: torch.Tensor | None = None,
) -> Seq2Seq:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        cell=cell.removesuffix("_peephole"),
        peepholes=cell.endswith("_peephole"),
        attention=attention,
        bidirectional=bidirectional,
        input_feed=input_feed,
        embed_dim=12,
        encoder_hidden=size // 2 if bidirectional else size,
        decoder_hidden=size,
        layers=layers,
        dropout=dropout,
    )
    return Seq2Seq(cfg, VOCAB, VOCAB, output_ids)


def make_batch(lengths_src=(5, 9, 3), lengths_tgt=(4, 7, 6), seed: int = 0):
    rng = np.random.default_rng(seed)
    sources = [np.append(rng.integers(4, VOCAB, size=n), 3) for n in lengths_src]
    targets = [rng.integers(4, VOCAB, size=n) for n in lengths_tgt]
    return sources, targets, collate(sources, targets)


@pytest.mark.parametrize(("cell", "attention", "bidirectional"), COMBOS)
@pytest.mark.parametrize("input_feed", [True, False])
def test_padding_invariance(cell, attention, bidirectional, input_feed):
    """A sentence alone and inside a padded batch gives the same features."""
    model = make_model(cell, attention, bidirectional, input_feed).eval()
    sources, targets, batch = make_batch()
    with torch.no_grad():
        together, _ = model(batch)
        for i in range(len(sources)):
            alone, _ = model(collate([sources[i]], [targets[i]]))
            steps = alone.size(1)
            torch.testing.assert_close(alone[0], together[i, :steps], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("cell", "attention", "bidirectional"), COMBOS)
@pytest.mark.parametrize("input_feed", [True, False])
def test_forward_equals_loop_of_steps(cell, attention, bidirectional, input_feed):
    """Teacher-forced forward = a loop of Decoder.step (features) and Seq2Seq.step (log-probs)."""
    model = make_model(cell, attention, bidirectional, input_feed).eval()
    _, _, batch = make_batch()
    with torch.no_grad():
        features, _ = model(batch)
        forward = torch.log_softmax(model.output(features).float(), dim=-1)
        enc = model.encode(batch.src, batch.src_lengths)
        state = decoder_state = model.init_state(enc)
        steps, step_features = [], []
        for t in range(batch.tgt_in.size(1)):
            log_probs, state, attention_weights = model.step(batch.tgt_in[:, t], state, enc)
            steps.append(log_probs)
            feature, decoder_state, _ = model.decoder.step(batch.tgt_in[:, t], decoder_state, enc)
            step_features.append(feature)
            if attention == "none":
                assert attention_weights is None
            else:
                assert attention_weights is not None
                torch.testing.assert_close(attention_weights.sum(-1), torch.ones(3))
                assert torch.all(attention_weights[~enc.mask] == 0.0)
        looped = torch.stack(steps, dim=1)
        looped_features = torch.stack(step_features, dim=1)
    mask = batch.tgt_mask
    assert looped.dtype == torch.float32 and looped.shape == (3, mask.size(1), VOCAB)
    torch.testing.assert_close(looped[mask], forward[mask], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(looped_features[mask], features[mask], atol=1e-5, rtol=1e-4)


def test_attention_is_exactly_zero_on_padding():
    model = make_model("gru", "luong_general", True).eval()
    _, _, batch = make_batch(lengths_src=(2, 9, 4))
    with torch.no_grad():
        enc = model.encode(batch.src, batch.src_lengths)
        _, _, weights = model.step(batch.tgt_in[:, 0], model.init_state(enc), enc)
    assert weights is not None
    assert weights[0, 3:].eq(0).all() and weights[2, 5:].eq(0).all()
    assert weights[0, :3].gt(0).all()


@pytest.mark.parametrize(("cell", "attention", "bidirectional"), COMBOS)
def test_every_parameter_gets_a_gradient(cell, attention, bidirectional):
    for input_feed in (True, False):
        model = make_model(cell, attention, bidirectional, input_feed, dropout=0.1).train()
        _, _, batch = make_batch()
        criterion = Criterion(LossConfig(label_smoothing=0.1), VOCAB)
        features, targets = model(batch)
        result = criterion.train_loss(features, targets, batch.tgt_mask, model.output)
        result.loss.backward()
        missing = [
            name
            for name, p in model.named_parameters()
            if p.grad is None or not bool(p.grad.abs().sum() > 0)
        ]
        assert not missing, f"no gradient for {missing}"


@pytest.mark.parametrize(("cell", "attention"), list(itertools.product(CELLS, ATTENTION_TYPES)))
def test_overfits_a_tiny_batch(cell, attention):
    """Every cell x attention combination memorises 3 pairs to near-zero loss."""
    model = make_model(cell, attention, bidirectional=True, layers=1, seed=1, size=48).train()
    _, _, batch = make_batch(seed=3)
    criterion = Criterion(LossConfig(label_smoothing=0.0), VOCAB)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(400):
        features, targets = model(batch)
        result = criterion.train_loss(features, targets, batch.tgt_mask, model.output)
        optimizer.zero_grad()
        result.loss.backward()
        optimizer.step()
        if result.loss.item() < 0.01:
            break
    assert result.loss.item() < 0.05
    model.eval()
    with torch.no_grad():
        features, targets = model(batch)
        predicted = model.output(features).argmax(-1)
    assert torch.equal(targets, batch.tgt_out)  # full output vocabulary: columns are ids
    assert torch.equal(predicted[batch.tgt_mask], batch.tgt_out[batch.tgt_mask])


def record_decoder_inputs(model: Seq2Seq) -> list[torch.Tensor]:
    """Make ``model`` record the ids its decoder embeds; returns the (growing) record."""
    fed: list[torch.Tensor] = []
    model.decoder.embed.register_forward_hook(lambda _m, args, _out: fed.append(args[0].clone()))
    return fed


def test_scheduled_sampling_feeds_model_predictions():
    """With teacher forcing 0 the decoder's inputs are the model's own argmax predictions."""
    model = make_model("gru", "bahdanau", True).eval()
    _, _, batch = make_batch()
    fed = record_decoder_inputs(model)
    with torch.no_grad():
        features, _ = model(batch, teacher_forcing=0.0)
    predictions = model.output(features).argmax(-1)
    assert torch.equal(fed[0], batch.tgt_in[:, 0])  # BOS first
    for t in range(1, batch.tgt_in.size(1)):
        real = batch.tgt_in[:, t] != 0
        assert torch.equal(fed[t][real], predictions[:, t - 1][real])
    # ...and with ratio 1 the gold tokens go in, in one batched call.
    fed.clear()
    with torch.no_grad():
        model(batch, teacher_forcing=1.0)
    assert len(fed) == 1 and torch.equal(fed[0], batch.tgt_in)


def test_scheduled_sampling_mixes_gold_and_predictions():
    model = make_model("lstm", "luong_dot", False).eval()
    _, _, batch = make_batch(lengths_tgt=(12, 12, 12))
    fed = record_decoder_inputs(model)
    torch.manual_seed(0)
    with torch.no_grad():
        features, _ = model(batch, teacher_forcing=0.5)
    predictions = model.output(features).argmax(-1)
    gold = sum(int(torch.sum(fed[t] == batch.tgt_in[:, t])) for t in range(1, 13))
    own = sum(int(torch.sum(fed[t] == predictions[:, t - 1])) for t in range(1, 13))
    assert gold > 5 and own > 5  # both sources used (36 positions)


def test_scheduled_sampling_feeds_ids_not_columns():
    """With a partial output vocabulary, own predictions are mapped from column to id."""
    observed = torch.tensor([7, 19, 33])
    model = make_model("gru", "luong_general", True, output_ids=observed).eval()
    _, _, batch = make_batch()
    fed = record_decoder_inputs(model)
    with torch.no_grad():
        features, _ = model(batch, teacher_forcing=0.0)
    columns = model.output(features).argmax(-1)
    assert model.output_ids.tolist() == [1, 3, 7, 19, 33]
    for t in range(1, batch.tgt_in.size(1)):
        real = batch.tgt_in[:, t] != 0
        assert torch.equal(fed[t][real], model.output_ids[columns[:, t - 1]][real])
        assert set(fed[t][real].tolist()) <= {1, 3, 7, 19, 33}


def test_decoder_state_select_reorders_gru_and_lstm():
    for cell in CELLS:
        model = make_model(cell, "bahdanau", True).eval()
        _, _, batch = make_batch()
        with torch.no_grad():
            enc = model.encode(batch.src, batch.src_lengths)
            state = model.init_state(enc)
            index = torch.tensor([2, 2, 0])
            picked = state.select(index)
            assert torch.equal(picked.hidden, state.hidden[:, index])
            if cell == "lstm":
                assert picked.cell is not None and torch.equal(picked.cell, state.cell[:, index])
            lp_sel, _, _ = model.step(batch.tgt_in[index, 0], picked, enc.select(index))
            lp_all, _, _ = model.step(batch.tgt_in[:, 0], state, enc)
            torch.testing.assert_close(lp_sel, lp_all[index])


@pytest.mark.parametrize("cell", CELLS)
def test_bf16_autocast_runs_and_trains(cell):
    model = make_model(cell, "bahdanau", True, dropout=0.1).train()
    _, _, batch = make_batch()
    criterion = Criterion(LossConfig(), VOCAB)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features, targets = model(batch)
        result = criterion.train_loss(features, targets, batch.tgt_mask, model.output)
    result.loss.backward()
    assert torch.isfinite(result.loss)
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())


def test_bridge_handles_layer_mismatch_and_zero():
    torch.manual_seed(0)
    cfg = ModelConfig(
        cell="lstm",
        embed_dim=8,
        encoder_hidden=8,
        decoder_hidden=12,
        layers=3,
        decoder_layers=2,
        bidirectional=True,
        attention="bahdanau",
    )
    model = Seq2Seq(cfg, VOCAB, VOCAB).eval()
    _, _, batch = make_batch()
    enc = model.encode(batch.src, batch.src_lengths)
    state = model.init_state(enc)
    assert state.hidden.shape == (2, 3, 12) and state.cell is not None
    assert model.decoder.bridge.sources == [1, 2]  # the top encoder layers
    zero = Seq2Seq(
        ModelConfig(bridge="zero", embed_dim=8, encoder_hidden=8, decoder_hidden=12), VOCAB, VOCAB
    )
    zstate = zero.init_state(zero.encode(batch.src, batch.src_lengths))
    assert zstate.hidden.abs().sum() == 0


def test_tied_embeddings_share_storage():
    cfg = ModelConfig(
        embed_dim=16, decoder_hidden=16, encoder_hidden=8, tie_embeddings=True, output_vocab="full"
    )
    model = Seq2Seq(cfg, VOCAB, VOCAB)
    assert model.output.weight is model.decoder.embed.weight


def test_pretrained_embeddings_cover_known_pieces(tmp_path):
    from mtkit import errors
    from mtkit.config import TokenizerConfig
    from mtkit.corpus.tokenizer import SubwordModel, train_subword_model
    from mtkit.model.seq2seq import load_pretrained

    sentences = ["the cat sees the dog", "a dog runs", "the small cat sleeps"] * 20
    vocab = SubwordModel(train_subword_model(sentences, TokenizerConfig(vocab_size=30)))
    piece = vocab.id_to_piece(10)
    vectors = tmp_path / "vec.txt"
    vectors.write_text(f"2 4\n{piece} 1 2 3 4\nnotapiece 5 6 7 8\n", encoding="utf-8")
    embedding = torch.nn.Embedding(vocab.vocab_size, 4)
    assert load_pretrained(embedding, str(vectors), vocab, "model.pretrained_src_embeddings") == 1
    assert embedding.weight[10].tolist() == [1.0, 2.0, 3.0, 4.0]
    vectors.write_text(f"{piece} 1 nan 3 4\n", encoding="utf-8")
    with pytest.raises(errors.ConfigError, match=r"vec\.txt:1: the vector holds NaN or inf"):
        load_pretrained(embedding, str(vectors), vocab, "model.pretrained_src_embeddings")


def test_output_vocabulary_covers_observed_targets_only():
    from mtkit.search import SearchOptions, beam_search, forced_scores, greedy_search

    torch.manual_seed(0)
    cfg = ModelConfig(embed_dim=12, encoder_hidden=8, decoder_hidden=16)
    observed = torch.tensor([30, 10, 10, 20, 30])
    model = Seq2Seq(cfg, VOCAB, VOCAB, output_ids=observed).eval()
    assert model.output_ids.tolist() == [1, 3, 10, 20, 30]  # UNK and EOS always included
    assert model.output.weight.shape[0] == 5
    pair = collate([np.array([5, 6, 3])], [np.array([3, 10, 30, 25])])
    _, targets = model(pair)  # targets as columns: 25 is outside -> UNK's column
    assert targets[0].tolist() == [1, 2, 4, 0, 1]  # ..., then EOS
    _, _, batch = make_batch()
    options = SearchOptions(beam_size=1, length_norm="none", max_len_a=0.0, max_len_b=6)
    greedy = greedy_search(model, batch.src, batch.src_lengths, options)
    beam = beam_search(model, batch.src, batch.src_lengths, options)
    for [g], b in zip(greedy, beam, strict=True):  # both: one list of hypotheses per input
        assert set(g.tokens) <= {1, 10, 20, 30}  # ids, never column numbers
        assert g.tokens == b[0].tokens
    scores = forced_scores(
        model, batch.src[:2], batch.src_lengths[:2], [[10, 20], [10, 25]], options
    )
    assert scores[0] > float("-inf") and scores[1] == float("-inf")


def test_column_counts_count_training_targets_per_output_column():
    cfg = ModelConfig(embed_dim=12, encoder_hidden=8, decoder_hidden=16)
    model = Seq2Seq(cfg, VOCAB, VOCAB, output_ids=torch.tensor([10, 20, 30]))  # 1, 3, 10, 20, 30
    values = np.array([10, 30, 10, 25, 30, 30], dtype=np.int32)  # 25: outside, counts as UNK
    assert model.column_counts(values, n_sentences=2).tolist() == [1, 2, 2, 0, 3]
    full = Seq2Seq(
        ModelConfig(embed_dim=12, encoder_hidden=8, decoder_hidden=16, output_vocab="full"),
        VOCAB,
        VOCAB,
    )
    counts = full.column_counts(values, n_sentences=2)
    assert counts.shape == (VOCAB,) and counts[3] == 2 and counts[30] == 3 and counts.sum() == 8


def test_byte_mask_dropout_is_unbiased_and_masks_gradients():
    from mtkit.model.dropout import dropout

    torch.manual_seed(0)
    x = torch.ones(400, 500, requires_grad=True)
    y = dropout(x, 0.3, training=True)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 77 / 256) < 0.01  # p rounded to a multiple of 1/256
    assert abs(y.mean().item() - 1.0) < 0.01  # kept values are rescaled
    y.sum().backward()
    assert torch.equal(x.grad == 0, y == 0)
    assert dropout(x, 0.3, training=False) is x


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_byte_mask_dropout_follows_the_bernoulli_definition(p):
    """Same law as x * Bernoulli(1 - p) / (1 - p), with p rounded to 1/256; backward reuses
    the forward mask exactly."""
    from mtkit.model.dropout import dropout, dropout_reference, effective_rate

    rate = effective_rate(p)
    assert rate == round(256 * p) / 256 and abs(rate - p) <= 1 / 512
    torch.manual_seed(0)
    x = (torch.rand(400, 500) + 0.5).requires_grad_()  # nonzero, so zero output = dropped
    y = dropout(x, p, training=True)
    kept = y != 0
    assert abs(kept.float().mean().item() - (1 - rate)) < 0.005  # keep rate (std ~0.001)
    torch.testing.assert_close(y[kept], x[kept] / (1 - rate))  # kept values: x / keep rate
    reference = dropout_reference(x.detach(), p)
    assert abs((reference != 0).float().mean().item() - (1 - p)) < 0.005
    for sample in (y, reference):  # both unbiased: mean(y / x) ~ 1
        assert abs((sample / x).mean().item() - 1.0) < 0.01
    upstream = torch.randn_like(x)
    y.backward(upstream)
    assert x.grad is not None
    torch.testing.assert_close(x.grad, upstream * kept / (1 - rate))


def test_dropout_rounding_edges():
    from mtkit.model.dropout import dropout

    x = torch.ones(1000)
    assert torch.equal(dropout(x, 1 / 1024, training=True), x)  # below 1/512: drops nothing
    assert torch.equal(dropout(x, 0.999, training=True), torch.zeros(1000))  # rounds to 1


@pytest.mark.parametrize("cell", CELLS)
def test_tabulated_word_gates_are_the_computed_ones(cell):
    """An inference copy's table of word gates (mtkit.search.quantize) holds what the model
    computes; the model keeps computing them from its embedding, which trains."""
    from mtkit.search.quantize import GateTable

    model = make_model(cell, "bahdanau", True, dropout=0.3).eval()
    decoder = model.decoder
    ids = torch.tensor([[3, 7, 7], [1, 0, VOCAB - 1]])  # (B, T), padding and BOS included
    computed = decoder.word_gates(ids)  # (B, T, G)
    keys = set(model.state_dict())
    table = GateTable(decoder.word_gates, decoder.embed.weight)
    assert not table.state_dict() and set(model.state_dict()) == keys
    assert torch.allclose(table(ids), computed, atol=1e-6)
    # Training never reads a table: the embedding gets its gradient and its dropout.
    model.train()
    torch.manual_seed(5)
    decoder.word_gates(ids).sum().backward()
    assert decoder.embed.weight.grad is not None and decoder.embed.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("cell", "attention", "bidirectional"), COMBOS)
@pytest.mark.parametrize("input_feed", [True, False])
def test_step_and_forward_equal_the_reference_step(cell, attention, bidirectional, input_feed):
    """The fast forms (word gates apart from the fed vector's, products as modules, the
    sigmoid form of additive scores, one fused call or batched features over T) compute
    the decoder's equations as ``Decoder.reference_step`` writes them."""
    model = make_model(cell, attention, bidirectional, input_feed).eval()
    _, _, batch = make_batch()
    decoder = model.decoder
    with torch.no_grad():
        enc = model.encode(batch.src, batch.src_lengths)
        features = decoder(batch.tgt_in, enc, model.init_state(enc))  # (B, T, H)
        state = reference_state = model.init_state(enc)
        for t in range(batch.tgt_in.size(1)):
            prev = batch.tgt_in[:, t]
            got, state, weights = decoder.step(prev, state, enc)
            want, reference_state, want_weights = decoder.reference_step(prev, reference_state, enc)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(features[:, t], want, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(state.hidden, reference_state.hidden, atol=1e-5, rtol=1e-4)
            if attention == "none":
                assert weights is None and want_weights is None
            else:
                torch.testing.assert_close(weights, want_weights, atol=1e-5, rtol=1e-4)

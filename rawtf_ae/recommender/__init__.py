"""The recommender half: ratings, their batches, the sparse step's pieces, top-K, baselines.

  ratings.py           id vocabularies, sparse rating rows, train/held-out splits
  ratings_file.py      the ratings CSV reader (one line naming each bad row) and writer
  implicit.py          implicit feedback: binarizing, the strong-generalization split (held-out users)
  ranking.py           Recall@K and NDCG@K over the whole catalog (vae_cf's definitions)
  batching.py          dense or sparse ratings batches (`data.ratings_batches`, auto)
  sparse_noise.py      masking noise on observed entries, the same on any number of replicas
  sparse_gradients.py  the sparse step's gradients as the optimizer and the replicas need them
  top_k.py             ItemIndex: one user's exact top-K over a large catalog (int8 first pass)
  shard_top_k.py       top-K over a kernel sharded on parameter servers: each shard's, merged
  recommend.py         Recommender: top-K unrated items for a user's ratings
  synthetic.py         low-rank synthetic ratings (`python -m rawtf_ae.recommender.synthetic`)
  baselines.py         per-item mean, biased matrix factorisation; popularity, EASE

Imports `rawtf_ae.models`, `rawtf_ae.optim` and `rawtf_ae.files`.
"""

"""A checkpoint of a run whose variables are sharded over parameter servers, in one device's layout.

`layout_free(optimizer, model)` is what `TrainState.checkpoint` saves as the optimizer: under
`train.strategy=parameter_server` Keras makes each shard's slots beside it, so the optimizer's
own children would be one variable per shard and the checkpoint's keys would depend on
`train.ps_shards`. Joined into one `ShardedVariable` per sharded variable (saved as its whole
tensor, restored into any number of shards), the checkpoint restores with any shard count, on
one device, and the other way round. A model without sharded variables keeps its optimizer.
"""

from __future__ import annotations

import tensorflow as tf

from rawtf_ae.models import row_ops


def model_variables(model):
    """The autoencoder's kernels and biases (none for a model without them, e.g. a classifier)."""
    names = ("kernels", "decoder_kernels", "encoder_biases", "decoder_biases")
    return [v for name in names for v in getattr(model, name, ()) if v is not None]


def _plain(variable):
    """The `tf.Variable` of a Keras variable (Keras 3 wraps optimizer slots), or `variable`."""
    return variable if isinstance(variable, tf.Variable) else getattr(variable, "value", variable)


class _Checkpointed(tf.__internal__.tracking.Trackable):
    """An optimizer as a checkpoint holds it, its children given (`layout_free`)."""

    def __init__(self, children: dict):
        # Lists become trackable lists (children "0", "1", ...), as Keras's are.
        self._children = {name: tf.__internal__.tracking.wrap(value) for name, value in children.items()}

    def _trackable_children(self, save_type="checkpoint", **kwargs):
        return dict(self._children)

    def _lookup_dependency(self, name, cached_dependencies=None):
        return self._children.get(name)


def layout_free(optimizer, model):
    """What a checkpoint of `model`'s run holds as its `optimizer`: the optimizer itself, or,
    where the model has sharded variables, a stand-in with the optimizer's children in which
    each sharded variable's parts and their slots (one per part: Keras makes slots beside each
    part) are joined into one `ShardedVariable` each. A `ShardedVariable` is saved as its whole
    tensor and restores into any number of shards, so the checkpoint has one device's keys and
    shapes: it restores with any `train.ps_shards`, on one device, and the other way round."""
    groups = {}  # a part's ref -> (its sharded variable, the refs of all its parts)
    for variable in model_variables(model):
        if row_ops.is_sharded(variable):
            refs = [part.ref() for part in variable.variables]
            groups.update((ref, (variable, refs)) for ref in refs)
    if not groups:
        return optimizer
    trainable = [_plain(v) for v in optimizer._trainable_variables]
    children = optimizer._trackable_children()
    # Slot lists: one variable per trainable variable, in its order (`_momentums`, ...).
    slot_lists = {
        name: list(value)
        for name, value in children.items()
        if name != "_trainable_variables"
        and isinstance(value, (list, tuple))
        and len(value) == len(trainable)
        and all(isinstance(_plain(v), tf.Variable) for v in value)
    }
    position = {v.ref(): i for i, v in enumerate(trainable)}

    def joined(values):
        """`values` (aligned with `trainable`) with each sharded variable's parts joined."""
        out = []
        for i, value in enumerate(values):
            ref = trainable[i].ref()
            if ref not in groups:
                out.append(value)
            elif groups[ref][1][0] == ref:  # the first part stands for all
                parts = [_plain(values[position[r]]) for r in groups[ref][1]]
                out.append(
                    groups[ref][0]
                    if values is trainable
                    else tf.__internal__.distribute.ShardedVariable(parts)
                )
        return out

    new = {"_trainable_variables": joined(trainable)}
    new.update((name, joined(values)) for name, values in slot_lists.items())
    # `_variables`: the non-slot variables kept, each slot replaced by its joined slot once.
    by_slot = {}
    for name, values in slot_lists.items():
        canonical = iter(new[name])
        for i, value in enumerate(values):
            ref = trainable[i].ref()
            if ref not in groups or groups[ref][1][0] == ref:
                by_slot[id(value)] = next(canonical)
            else:
                by_slot[id(value)] = None  # joined into the first part's
    new["_variables"] = [
        by_slot.get(id(v), v) for v in children["_variables"] if by_slot.get(id(v), v) is not None
    ]
    return _Checkpointed({name: new.get(name, value) for name, value in children.items()})

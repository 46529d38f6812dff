"""Weight decay on weights only: biases and normalisation gamma/beta get none, as in the original."""


def get_param_groups(network):
    decay, no_decay = [], []
    for param in network.trainable_params():
        if param.name.endswith(('.bias', '.gamma', '.beta')):
            no_decay.append(param)
        else:
            decay.append(param)
    return [{'params': no_decay, 'weight_decay': 0.0}, {'params': decay}]

"""The backbone screen: probe many backbones on the data before training any."""

use mlci_train as _;

// The layers as a plain stack (charlm.cells.Cell's hooks: the rnn, lstm and gru): the first
// layer reads the input, layer l + 1 reads h_l, the output layer reads the last layer's h.
() => ({
  streamIn: null,
  layerInput: (l, x) => x,
  between: (l, x, h) => h,
  streamOut: (x) => x,
})

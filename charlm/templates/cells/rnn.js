// The hand-written tanh RNN (charlm.cells.TanhRNN.step): h = tanh(x W_xh + b_h + h W_hh).
(xW, hW, h, c) => {
  for (let j = 0; j < h.length; j++) h[j] = Math.tanh(xW[j] + hW[j]);
}

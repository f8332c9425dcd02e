// nn.GRU (charlm.cells.GRU.step), gates in its order (r, z, n):
//   r, z = sigmoid(xW + hW)   n = tanh(xW_n + r hW_n)   h = (1 - z) n + z h
(xW, hW, h, c) => {
  const H = h.length;
  for (let j = 0; j < H; j++) {
    const r = sigmoid(xW[j] + hW[j]);
    const z = sigmoid(xW[H + j] + hW[H + j]);
    const n = Math.tanh(xW[2 * H + j] + r * hW[2 * H + j]);
    h[j] = (1 - z) * n + z * h[j];
  }
}

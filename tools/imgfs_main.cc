// imgfs — the command-line tool (placeholder until the CLI lands).
#include <cstdio>

int main() {
  std::puts("imgfs");
  return 0;
}

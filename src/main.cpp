#include <cstdio>
int main() { std::printf("opd %s\n", OPD_VERSION); return 0; }
